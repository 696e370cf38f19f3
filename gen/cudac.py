#!/usr/bin/env python3
"""cudac.py - the Metal kernels (kernels/*.metal) as CUDA: MSL -> CUDA C++ -> PTX -> metalllm.h.

    gen/cudac.py                 regenerate the PTX embedded in metalllm.h (CUDA backend section)
    gen/cudac.py --check         exit 1 if the embedded PTX is stale
    gen/cudac.py --cu OUT.cu     write the translated CUDA C++ only (for reading)
    gen/cudac.py --ptx OUT.ptx   write the PTX only (with --check: too)

Translation reuses tests/emu/mslc.py's front end (clang -E with its pp_stub, the parsers of kernel
signatures, [[host_name]] instantiations and threadgroup variables); only the output differs:
  - every kernels/*.metal becomes a namespace of one CUDA translation unit, compiled against
    gen/cuda/metal_shim.h (the CUDA metal_stdlib: warps for simdgroups, shared memory, shuffles);
  - every entry point gets an extern "C" __global__ function named after its host name, whose
    parameters are the kernel's [[buffer(i)]] parameters in order (pointers stay pointers, `constant
    T &` arrive by value as kernel parameters) and which computes the built-in ids from CUDA's;
  - a signature per entry point tells the host which buffer index feeds each parameter ('p' pointer,
    'v' bytes by value), e.g. "0p1p2p3v".
clang (CUDA device mode, NVPTX back end; already the emulator's compiler) emits PTX for sm_80 with
libdevice linked in; the driver compiles it for the GPU at hand (sm_90 on an H200).  Comments,
indentation and repeated blanks go (the PTX written by --ptx is what is embedded, once unpacked), and
the header holds it packed (pack(): a plain LZ77 in printable characters, a third of the size, which
mllm__cuda_ptx_unpack in metalllm.h expands).  The generated text is deterministic, so --check compares
it byte for byte.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, 'tests', 'emu'))
import mslc  # noqa: E402

BEGIN = '/* BEGIN GENERATED CUDA */'
END = '/* END GENERATED CUDA */'
ARCH = 'sm_80'   # baseline: the driver JIT-compiles this PTX for newer GPUs


def find_libdevice():
    for d in (os.environ.get('CUDA_PATH', ''), '/usr/local/cuda', '/usr/lib/cuda'):
        p = os.path.join(d, 'nvvm', 'libdevice', 'libdevice.10.bc')
        if d and os.path.exists(p):
            return p
    raise mslc.Error('libdevice.10.bc not found (set CUDA_PATH)')


def translate_file(path, cxx, ns):
    """one .metal file -> (CUDA C++ text, [(host name, signature)])"""
    pp = subprocess.run([cxx, '-E', '-P', '-x', 'c++', '-std=c++17', '-I', os.path.join(ROOT, 'tests', 'emu', 'pp_stub'),
                         '-I', os.path.dirname(os.path.abspath(path)), path], capture_output=True, text=True)
    if pp.returncode:
        raise mslc.Error(pp.stderr.strip())
    tk = mslc.Tokens(pp.stdout)
    notes = []
    insts = mslc.find_instantiations(tk)
    kernels = mslc.find_kernels(tk)
    mslc.rewrite_threadgroup_vars(tk, notes)
    if any(tk.text(a) == 'function_constant' for a in range(len(tk.sig))):
        raise mslc.Error('%s: function constants are not supported by the CUDA translation' % path)
    mslc.rename_keywords_in_attributes(tk)
    by_name = {k['name']: k for k in kernels}
    entries = [(k['host'], k['name'], k) for k in kernels if not k['template']]
    for host, tname, targs in insts:
        if tname not in by_name:
            raise mslc.Error('[[host_name("%s")]]: no kernel template named %s' % (host, tname))
        entries.append((host, tname + targs, by_name[tname]))
    out, sigs = [], []
    for host, fn, k in entries:
        params, args, sig = [], [], ''
        for i, (kind, idx) in enumerate(k['binds']):
            if kind == 'B_TGMEM':
                raise mslc.Error('%s: [[threadgroup(%d)]] parameters are not supported (declare the array in the kernel)' % (host, idx))
            if kind == 'B_BUFFER':
                params.append('::msl::param_t<::msl::arg_t<F_, %d>> b%d' % (i, idx))
                args.append('b%d' % idx)
                sig += '%d%s' % (idx, 'p' if k['ptr'][i] else 'v')
            else:
                args.append('::msl::builtin<::msl::arg_t<F_, %d>>(::msl::%s)' % (i, kind))
        pl = ', '.join(params)
        out.append('namespace %s {\nusing F_%s = decltype(&%s);\nMETAL_FUNC void L_%s(%s) { %s(%s); }\n}' % (
            ns, host, fn, host, pl.replace('F_,', 'F_%s,' % host), fn,
            ', '.join(x.replace('F_,', 'F_%s,' % host) for x in args)))
        out.append('extern "C" __global__ void %s(%s) { %s::L_%s(%s); }' % (
            host, pl.replace('F_,', '%s::F_%s,' % (ns, host)), ns, host,
            ', '.join('b%d' % idx for kind, idx in k['binds'] if kind == 'B_BUFFER')))
        sigs.append((host, sig))
    code = 'namespace %s {\n%s\n}  // namespace %s\n%s\n' % (ns, tk.source(), ns, '\n'.join(out))
    return code, sigs


def patch_find_kernels():
    """mslc.find_kernels, plus whether each parameter is a pointer (from its tokens before [[...]])"""
    orig, orig_find, seen = mslc.param_binding, mslc.find_kernels, []

    def binding(tk, a, b, kname):
        texts = [tk.text(q) for q in range(a, b)]
        if '[[' in texts:
            texts = texts[:texts.index('[[')]
        seen.append((kname, '*' in texts))
        return orig(tk, a, b, kname)

    def find(tk):
        del seen[:]
        ks = orig_find(tk)
        for k in ks:
            k['ptr'] = [p for n, p in seen if n == k['name']][:len(k['binds'])]
        return ks
    mslc.param_binding = binding
    mslc.find_kernels = find


def translate_all(cxx):
    patch_find_kernels()
    files = sorted(os.path.join('kernels', f) for f in os.listdir(os.path.join(ROOT, 'kernels')) if f.endswith('.metal'))
    parts = ['// generated by gen/cudac.py from kernels/*.metal: do not edit', '#include "metal_shim.h"']
    sigs = []
    for f in files:
        ns = 'mslk_' + os.path.basename(f)[:-6]
        code, s = translate_file(os.path.join(ROOT, f), cxx, ns)
        parts.append('// ---- %s' % f)
        parts.append(code)
        sigs += s
    parts.append('#pragma clang force_cuda_host_device end')
    return '\n'.join(parts), sigs


def compile_ptx(cu, cxx):
    with tempfile.TemporaryDirectory() as d:
        src, ptx = os.path.join(d, 'kernels.cu'), os.path.join(d, 'kernels.ptx')
        with open(src, 'w') as f:
            f.write(cu)
        cmd = [cxx, '-x', 'cuda', '--cuda-device-only', '--cuda-gpu-arch=' + ARCH, '-nocudainc', '-nocudalib',
               '-Wno-unknown-cuda-version', '-O3', '-std=c++17', '-S', '-I', os.path.join(HERE, 'cuda'),
               '-Xclang', '-mlink-builtin-bitcode', '-Xclang', find_libdevice(),
               '-Xclang', '-ffloat16-excess-precision=none', '-Xclang', '-fbfloat16-excess-precision=none',
               '-Wno-unused-parameter', '-Wno-duplicate-decl-specifier', '-Wno-unknown-attributes', '-o', ptx, src]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            raise mslc.Error('clang (CUDA) failed:\n' + r.stderr[-6000:])
        text = open(ptx).read()
    return normalize(text)


def normalize(text):
    """the PTX without what the driver ignores: comments (none sits inside a string here: a line with a
    string keeps its text), indentation, runs of blanks, blank lines"""
    out = []
    for ln in text.split('\n'):
        if '//' in ln and '"' not in ln:
            ln = ln[:ln.index('//')]
        ln = ' '.join(ln.split())
        if ln:
            out.append(ln)
    return '\n'.join(out) + '\n'


# pack(): '~' stands for a newline; '`' starts a copy of earlier output, a length digit (MINLEN + its
# value; the digit 63 adds the next digit's value too) and three digits of distance back (< 2^18); any
# other character is itself.  Digits are B64's.  PTX never holds '~' or '`' (checked).  Greedy longest
# match over the last DEPTH places where the next MINLEN characters occurred.
B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
MINLEN, MAXLEN, WINDOW, DEPTH = 5, 5 + 63 + 63, 1 << 18, 16


def pack(t):
    if '~' in t or '`' in t:
        raise mslc.Error('the PTX holds ~ or `, which pack() uses')
    n, out, heads, i = len(t), [], {}, 0
    while i < n:
        best, dist = 0, 0
        for j in reversed(heads.get(t[i:i + MINLEN], [])[-DEPTH:]):
            if i - j >= WINDOW:
                break
            k = MINLEN
            while k + 16 <= MAXLEN and t[j + k:j + k + 16] == t[i + k:i + k + 16] and i + k + 16 <= n:
                k += 16
            while k < MAXLEN and i + k < n and t[j + k] == t[i + k]:
                k += 1
            if k > best:
                best, dist = k, i - j
        step = best if best >= MINLEN else 1
        if step > 1:
            v = best - MINLEN
            out.append('`' + (B64[v] if v < 63 else B64[63] + B64[v - 63]) +
                       B64[dist >> 12] + B64[(dist >> 6) & 63] + B64[dist & 63])
        else:
            out.append('~' if t[i] == '\n' else t[i])
        for q in range(i, i + step):
            heads.setdefault(t[q:q + MINLEN], []).append(q)
        i += step
    return ''.join(out)


def unpack(s):
    """pack's inverse (the C one is mllm__cuda_ptx_unpack); checks every block before it is embedded"""
    o, i, rev = [], 0, {c: k for k, c in enumerate(B64)}
    while i < len(s):
        if s[i] == '`':
            v = rev[s[i + 1]]
            i += 2
            if v == 63:
                v += rev[s[i]]
                i += 1
            d = rev[s[i]] << 12 | rev[s[i + 1]] << 6 | rev[s[i + 2]]
            i += 3
            for _ in range(MINLEN + v):
                o.append(o[-d])
        else:
            o.append('\n' if s[i] == '~' else s[i])
            i += 1
    return ''.join(o)


def c_string(text, name, width=120):
    """text as a C string in lines of about width characters (no escape sequence split across lines)"""
    out, cur, n = ['static const char %s[] =' % name], [], 0
    for c in text:
        e = {'\\': '\\\\', '"': '\\"', '?': '\\?', '\n': '\\n', '\t': '\\t'}.get(c, c)   # ? : no trigraphs
        if n + len(e) > width:
            out.append('"%s"' % ''.join(cur))
            cur, n = [], 0
        cur.append(e)
        n += len(e)
    out.append('"%s";' % ''.join(cur))
    return '\n'.join(out)


def block(ptx, sigs):
    packed = pack(ptx)
    if unpack(packed) != ptx:
        raise mslc.Error('pack() does not invert')
    b = [BEGIN, '/* PTX (%s) of every kernel of kernels/NAME.metal, translated by gen/cudac.py (do not edit: run it),\n'
         '   packed (%d bytes unpacked: mllm__cuda_ptx_unpack), and each entry point\'s "name", "signature"\n'
         '   (buffer index + p: pointer, v: bytes by value). */' % (ARCH, len(ptx))]
    b.append('static const char *const mllm__cuda_sig_table[] = {')
    for h, s in sigs:
        b.append('    "%s", "%s",' % (h, s))
    b.append('    NULL, NULL};')
    b.append('#if defined(__GNUC__) || defined(__clang__)')
    b.append('#pragma GCC diagnostic push')
    b.append('#pragma GCC diagnostic ignored "-Woverlength-strings"   /* C11 promises 4095 characters */')
    b.append('#endif')
    b.append(c_string(packed, 'mllm__cuda_ptx_text'))
    b.append('#if defined(__GNUC__) || defined(__clang__)')
    b.append('#pragma GCC diagnostic pop')
    b.append('#endif')
    b.append('static const char *mllm__cuda_ptx_packed(size_t *unpacked) { *unpacked = %d; return mllm__cuda_ptx_text; }' % len(ptx))
    b.append('static const char *const *mllm__cuda_sigs(void) { return mllm__cuda_sig_table; }')
    b.append(END)
    return '\n'.join(b)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--check', action='store_true')
    ap.add_argument('--cu')
    ap.add_argument('--ptx')
    ap.add_argument('--cxx', default=os.environ.get('EMU_CXX', 'clang++-19'))
    ap.add_argument('--header', default=os.path.join(ROOT, 'metalllm.h'))
    a = ap.parse_args()
    try:
        cu, sigs = translate_all(a.cxx)
        if a.cu:
            open(a.cu, 'w').write(cu)
            if not a.ptx:
                return 0
        ptx = compile_ptx(cu, a.cxx)
        if a.ptx:
            open(a.ptx, 'w').write(ptx)
            if not a.check:
                return 0
        blk = block(ptx, sigs)
    except mslc.Error as e:
        sys.stderr.write('cudac: %s\n' % e)
        return 1
    hdr = open(a.header).read()
    i, j = hdr.find(BEGIN), hdr.find(END)
    if i < 0 or j < 0:
        sys.stderr.write('cudac: %s has no %s ... %s markers\n' % (a.header, BEGIN, END))
        return 1
    new = hdr[:i] + blk + hdr[j + len(END):]
    if a.check:
        if new != hdr:
            sys.stderr.write('cudac: the PTX embedded in %s is stale: run gen/cudac.py\n' % a.header)
            return 1
        print('cudac: embedded PTX up to date (%d entry points)' % len(sigs))
        return 0
    if new != hdr:
        tmp = a.header + '.tmp'
        open(tmp, 'w').write(new)
        os.replace(tmp, a.header)
    print('cudac: %d entry points, %d KiB of PTX, %d KiB in the header' % (len(sigs), len(ptx) // 1024, len(blk) // 1024))
    return 0


if __name__ == '__main__':
    sys.exit(main())
