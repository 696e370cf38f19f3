#!/usr/bin/env python3
"""mslc.py - translate a Metal Shading Language compute file into C++ for the CPU emulator.

    mslc.py kernels/rmsnorm.metal -o build/emu/gen/rmsnorm.cpp [-D NAME=VALUE] [-I DIR]

Steps:
  1. `clang -E` with tests/emu/pp_stub as the <metal_stdlib>: user macros are expanded (so kernels
     and [[host_name]] instantiations made by macros are seen) while device/threadgroup/constant/kernel
     stay tokens; line markers are kept, so reports point at the .metal source.
  2. Rewrites what C++ cannot say:
       threadgroup T name[dims];        -> MSL_TG_VAR(name, ([dims]), T)  storage per threadgroup
       template [[host_name("h")]] ...  -> attribute lists dropped, instantiation remembered
       [[threadgroup(0)]], [[kernel]]   -> keywords inside attributes renamed (they are macros)
       constant T c [[function_constant(i)]];  -> reference to a per-dispatch value slot
  3. Appends one launch trampoline per entry point: it binds [[buffer(i)]], [[threadgroup(i)]] and the
     built-in ids to the parameters through decltype(&kernel) (no C++ type parsing here) and registers
     the kernel under its host name.
The kernel source is wrapped in an anonymous namespace, so helpers of different files never clash.
"""
import argparse
import os
import re
import subprocess
import sys

TOKEN = re.compile(r'''
    (?P<ws>[ \t\r\f\v]+) | (?P<nl>\n) | (?P<pp>^\#[^\n]*) |
    (?P<str>"(?:\\.|[^"\\\n])*") | (?P<chr>'(?:\\.|[^'\\\n])*') |
    (?P<num>\.?\d(?:[eEpP][+-]|[\w.])*) | (?P<id>[A-Za-z_]\w*) |
    (?P<op>\[\[|\]\]|::|->|<<=|>>=|<<|>>|<=|>=|==|!=|&&|\|\||\+\+|--|[-+*/%&|^]=) | (?P<p>.)
''', re.M | re.X)

BUILTINS = {
    'thread_position_in_grid': 'B_TPIG', 'threadgroup_position_in_grid': 'B_TGPIG',
    'thread_position_in_threadgroup': 'B_TPITG', 'threads_per_threadgroup': 'B_TPTG',
    'threadgroups_per_grid': 'B_TGPG', 'threads_per_grid': 'B_TPG',
    'thread_index_in_threadgroup': 'B_TIITG', 'thread_index_in_simdgroup': 'B_TIISG',
    'simdgroup_index_in_threadgroup': 'B_SGITG', 'simdgroups_per_threadgroup': 'B_SGPTG',
    'threads_per_simdgroup': 'B_TPSG', 'thread_execution_width': 'B_TPSG',
}
SPACES = ('device', 'constant', 'threadgroup', 'thread', 'kernel')


class Error(Exception):
    pass


class Tokens:
    """Token list with the indices of the significant tokens (no whitespace, newlines, line markers)."""

    def __init__(self, text):
        self.t = [[m.lastgroup, m.group()] for m in TOKEN.finditer(text)]
        self.sig = [i for i, (k, _) in enumerate(self.t) if k not in ('ws', 'nl', 'pp')]

    def text(self, a):   # text of significant token number a
        return self.t[self.sig[a]][1]

    def blank(self, a, b):   # blank significant tokens a..b-1 and what lies between them, keeping newlines
        for i in range(self.sig[a], self.sig[b - 1] + 1):
            if self.t[i][0] != 'nl':
                self.t[i][1] = ''

    def source(self):
        return ''.join(x[1] for x in self.t)


def match(tk, a, open_, close):
    """index of the significant token closing the bracket opened at a"""
    d = 0
    for b in range(a, len(tk.sig)):
        s = tk.text(b)
        if s == open_:
            d += 1
        elif s == close:
            d -= 1
            if d == 0:
                return b
    raise Error('unbalanced %s' % open_)


def attr_end(tk, a):
    """a is at '[[': index after the matching ']]'"""
    b = a
    while tk.text(b) != ']]':
        b += 1
    return b + 1


def split_top(tk, a, b):
    """split significant tokens a..b-1 at top-level commas -> [(start, end)]"""
    parts, start, d = [], a, 0
    for q in range(a, b):
        s = tk.text(q)
        if s in ('(', '[', '{', '[['):
            d += 1
        elif s in (')', ']', '}', ']]'):
            d -= 1
        elif s == '<' and q > 0 and re.match(r'[A-Za-z_]', tk.text(q - 1)):
            d += 1   # template argument list, e.g. vec<float, 4>
        elif s == '>' and d > 0:
            d -= 1
        if s == ',' and d == 0:
            parts.append((start, q))
            start = q + 1
    if start < b:
        parts.append((start, b))
    return parts


def param_binding(tk, a, b, kname):
    texts = [tk.text(q) for q in range(a, b)]
    if '[[' not in texts:
        if '*' in texts or '&' in texts:
            return ['B_BUFFER', None]   # Metal assigns unannotated buffers the lowest free index
        raise Error('kernel %s: parameter "%s" has no [[...]] attribute' % (kname, ' '.join(texts)))
    i = texts.index('[[')
    attr = ''.join(texts[i + 1:texts.index(']]', i)])
    items = [x for x in attr.split(',') if x and not x.startswith('function_constant(')]
    if not items:
        return ['B_BUFFER', None]
    m = re.match(r'(buffer|threadgroup)\((\d+)\)$', items[0])
    if m:
        return ['B_BUFFER' if m.group(1) == 'buffer' else 'B_TGMEM', int(m.group(2))]
    if items[0] in BUILTINS:
        return [BUILTINS[items[0]], 0]
    raise Error('kernel %s: unsupported parameter attribute [[%s]]' % (kname, attr))


# Built-in position/size attributes whose types the MSL specification (kernel function input attributes)
# requires to agree: all scalars, or all vectors with the same number of components.  Apple's compiler
# rejects a kernel that mixes them (e.g. uint2 [[threadgroup_position_in_grid]] with a scalar
# [[threads_per_threadgroup]]), and since every kernel is compiled as one library, one such kernel
# disables the whole backend; clang would accept it, so it is checked here.
GRID_ATTRS = ('thread_position_in_grid', 'threads_per_grid', 'thread_position_in_threadgroup',
              'threads_per_threadgroup', 'threadgroup_position_in_grid', 'threadgroups_per_grid',
              'dispatch_threads_per_threadgroup')


def check_attr_widths(tk, parts, kname):
    seen = []
    for a, b in parts:
        texts = [tk.text(q) for q in range(a, b)]
        if '[[' not in texts:
            continue
        i = texts.index('[[')
        attr = ''.join(texts[i + 1:texts.index(']]', i)])
        if attr not in GRID_ATTRS or i < 2:
            continue
        m = re.match(r'(?:u?char|u?short|u?int|u?long|half|float|bool)([234]?)$', texts[i - 2])
        seen.append((attr, texts[i - 2], int(m.group(1) or 1) if m else 0))
    widths = {w for _, _, w in seen}
    if len(widths) > 1:
        raise Error('kernel %s: built-in position/size attributes must be all scalars or all vectors of one '
                    'width (MSL spec), got %s' % (kname, ', '.join('%s [[%s]]' % (t, at) for at, t, _ in seen)))


def find_kernels(tk):
    """entry points: [{'name', 'template', 'binds', 'host'}] for kernel definitions at namespace scope"""
    out, a, n = [], 0, len(tk.sig)
    while a < n:
        s = tk.text(a)
        if s == '{' and not (tk.text(a - 1) == 'namespace' or (a >= 2 and tk.text(a - 2) == 'namespace')):
            a = match(tk, a, '{', '}') + 1   # a function, struct or initializer body: no kernels inside
            continue
        if s == 'kernel' or s == '[[':
            start, host, is_kernel, b = a, None, False, a
            while b < n and (tk.text(b) in ('kernel', '[[')):
                if tk.text(b) == 'kernel':
                    is_kernel = True
                    b += 1
                    continue
                e = attr_end(tk, b)
                body = [tk.text(q) for q in range(b + 1, e - 1)]
                joined = ''.join(body)
                is_kernel = is_kernel or 'kernel' in body
                m = re.match(r'host_name\((.*)\)$', joined)
                if m:
                    host = ''.join(re.findall(r'"((?:\\.|[^"\\])*)"', m.group(1)))
                b = e
            if is_kernel and b + 2 < n and tk.text(b) == 'void' and tk.text(b + 2) == '(':
                name = tk.text(b + 1)
                close = match(tk, b + 2, '(', ')')
                e = close + 1
                while e < n and tk.text(e) == '[[':
                    e = attr_end(tk, e)
                if e < n and tk.text(e) == '{':
                    binds = [param_binding(tk, p, q, name) for p, q in split_top(tk, b + 3, close)]
                    check_attr_widths(tk, split_top(tk, b + 3, close), name)
                    used = {i for k, i in binds if k == 'B_BUFFER' and i is not None}
                    nxt = 0
                    for bd in binds:
                        if bd[0] == 'B_BUFFER' and bd[1] is None:
                            while nxt in used:
                                nxt += 1
                            bd[1] = nxt
                            used.add(nxt)
                    is_tmpl = start > 0 and tk.text(start - 1) == '>'
                    out.append({'name': name, 'template': is_tmpl, 'binds': binds, 'host': host or name})
                    a = match(tk, e, '{', '}') + 1
                    continue
            a = b if b > a else a + 1
            continue
        a += 1
    return out


def find_instantiations(tk):
    """template [[host_name("h")]] [[kernel]] <decl>;  -> attributes blanked; [(host, template name, args text)]"""
    res = []
    for a in range(len(tk.sig) - 1):
        if tk.text(a) != 'template' or tk.text(a + 1) != '[[':
            continue
        b, host = a + 1, None
        while tk.text(b) == '[[':
            e = attr_end(tk, b)
            m = re.match(r'host_name\((.*)\)$', ''.join(tk.text(q) for q in range(b + 1, e - 1)))
            if m:
                host = ''.join(re.findall(r'"((?:\\.|[^"\\])*)"', m.group(1)))
            b = e
        if host is None:
            continue
        tk.blank(a + 1, b)
        e = b
        while tk.text(e) != ';':
            e += 1
        # the instantiated name is the last `name<...>` before '(' or ';'
        q = e - 1
        paren = None
        for z in range(b, e):
            if tk.text(z) == '(' and paren is None and tk.text(z - 1) == '>':
                paren = z
        if paren is not None:
            q = paren - 1
        if tk.text(q) != '>':
            raise Error('host_name %s: cannot find the template arguments' % host)
        d, p = 0, q
        while True:
            d += {'>': 1, '<': -1, '>>': 2}.get(tk.text(p), 0)
            if d == 0:
                break
            p -= 1
        res.append((host, tk.text(p - 1), ''.join(tk.text(z) + ' ' for z in range(p, q + 1)).strip()))
    return res


def rewrite_threadgroup_vars(tk, notes):
    """`threadgroup T a[n], b;` statements inside function bodies -> MSL_TG_VAR(...) declarations"""
    depth = 0
    a = 0
    while a < len(tk.sig):
        s = tk.text(a)
        if s == '{':
            depth += 1
        elif s == '}':
            depth -= 1
        elif s == 'threadgroup' and depth > 0 and a > 0 and tk.text(a - 1) in ('{', '}', ';'):
            e = a
            while tk.text(e) != ';':
                e += 1
            texts = [tk.text(q) for q in range(a + 1, e)]
            # pointers, references and initializers are left alone; array sizes may be expressions
            outer, nest = [], 0
            for x in texts:
                nest += x == '['
                nest -= x == ']'
                if nest == 0 and x != ']':
                    outer.append(x)
            if '*' in outer or '&' in outer or '(' in outer or '=' in outer:
                if '=' in texts and '*' not in texts and '&' not in texts:
                    notes.append('threadgroup variable with initializer left alone: ' + ' '.join(texts))
                a = e
                continue
            # type = tokens before the first declarator name
            decls = split_top(tk, a + 1, e)
            first_s, first_e = decls[0]
            ft = [tk.text(q) for q in range(first_s, first_e)]
            b = ft.index('[') if '[' in ft else len(ft)
            typ = ' '.join(ft[:b - 1])
            out = []
            for k, (p, q) in enumerate(decls):
                t = [tk.text(z) for z in range(p, q)]
                if k == 0:
                    t = t[b - 1:]
                name, dims = t[0], ''.join(t[1:])
                out.append('MSL_TG_VAR(%s, (%s), %s)' % (name, dims, typ))
            tk.blank(a, e)
            tk.t[tk.sig[a]][1] = '; '.join(out)
            a = e
            continue
        a += 1


def rewrite_function_constants(tk):
    names = {}
    for a in range(len(tk.sig)):
        if tk.text(a) != 'constant':
            continue
        e = a
        while e < len(tk.sig) and tk.text(e) not in (';', '{', '(', '[['):
            e += 1
        if e >= len(tk.sig) or tk.text(e) != '[[':
            continue
        ae = attr_end(tk, e)
        m = re.match(r'function_constant\((\w+)\)$', ''.join(tk.text(q) for q in range(e + 1, ae - 1)))
        if not m or tk.text(ae) != ';':
            continue
        name, typ = tk.text(e - 1), ' '.join(tk.text(q) for q in range(a + 1, e - 1))
        names[name] = m.group(1)
        tk.blank(a, ae + 1)
        tk.t[tk.sig[a]][1] = 'static const %s& %s = *(const %s*)::msl::rt::fc_slot(%s);' % (typ, name, typ, m.group(1))
    for a in range(len(tk.sig) - 3):
        if tk.text(a) == 'is_function_constant_defined' and tk.text(a + 2) in names:
            idx = names[tk.text(a + 2)]
            tk.blank(a, a + 4)
            tk.t[tk.sig[a]][1] = '::msl::rt::fc_defined(%s)' % idx


def rename_keywords_in_attributes(tk):
    inside = False
    for a in range(len(tk.sig)):
        s = tk.text(a)
        if s == '[[':
            inside = True
        elif s == ']]':
            inside = False
        elif inside and s in SPACES:
            tk.t[tk.sig[a]][1] = 'msl_attr_' + s


def translate(src, cxx, defines, includes, depfile=None, target=None):
    here = os.path.dirname(os.path.abspath(__file__))
    # metal_pp.h: the Metal compiler's predefined macros (__METAL_VERSION__...), there from the first
    # line as with Apple's compiler, not only after #include <metal_stdlib>
    cmd = [cxx, '-E', '-x', 'c++', '-std=c++17', '-I', os.path.join(here, 'pp_stub'),
           '-include', os.path.join(here, 'pp_stub', 'metal_pp.h'), '-I', os.path.dirname(os.path.abspath(src))]
    cmd += ['-I' + i for i in includes] + ['-D' + d for d in defines] + [src]
    if depfile:   # make dependencies on the .metal file and the headers it includes
        cmd += ['-MD', '-MF', depfile, '-MT', target]
    pp = subprocess.run(cmd, capture_output=True, text=True)
    if pp.returncode:
        raise Error(pp.stderr.strip())
    tk = Tokens(pp.stdout)
    notes = []
    insts = find_instantiations(tk)
    kernels = find_kernels(tk)
    rewrite_threadgroup_vars(tk, notes)
    rewrite_function_constants(tk)
    rename_keywords_in_attributes(tk)
    by_name = {k['name']: k for k in kernels}
    entries = [(k['host'], k['name'], k['binds']) for k in kernels if not k['template']]
    for host, tname, targs in insts:
        if tname not in by_name:
            raise Error('[[host_name("%s")]]: no kernel template named %s' % (host, tname))
        entries.append((host, tname + targs, by_name[tname]['binds']))
    lines = ['', '// ---- launch trampolines (mslc.py)']
    for i, (host, fn, binds) in enumerate(entries):
        args = ', '.join('::msl::bind<::msl::arg_t<F, %d>>(::msl::%s, %d)' % (k, kind, idx)
                         for k, (kind, idx) in enumerate(binds))
        lines.append('static void msl_thunk_%d() { using F = decltype(&%s); %s(%s); }' % (i, fn, fn, args))
        lines.append('static ::msl::Registrar msl_registrar_%d("%s", &msl_thunk_%d);' % (i, host, i))
    code = ('#include "metal_shim.hpp"\nnamespace {\n' + tk.source() + '\n' + '\n'.join(lines) +
            '\n}  // namespace\n')
    return code, entries, notes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('src')
    ap.add_argument('-o', required=True)
    ap.add_argument('--cxx', default=os.environ.get('EMU_CXX', 'clang++-19'))
    ap.add_argument('-D', action='append', default=[])
    ap.add_argument('-I', action='append', default=[])
    ap.add_argument('--dep', help='write make dependencies to this file')
    ap.add_argument('-v', action='store_true', help='list the entry points and their bindings')
    a = ap.parse_args()
    try:
        code, entries, notes = translate(a.src, a.cxx, a.D, a.I, a.dep, a.o)
    except Error as e:
        sys.stderr.write('mslc: %s: %s\n' % (a.src, e))
        return 1
    for n in notes:
        sys.stderr.write('mslc: %s: warning: %s\n' % (a.src, n))
    if a.v:
        for host, fn, binds in entries:
            sys.stderr.write('mslc: %-24s %s(%s)\n' % (host, fn, ', '.join(
                '%s(%d)' % (k[2:].lower(), i) if k in ('B_BUFFER', 'B_TGMEM') else k[2:].lower() for k, i in binds)))
    tmp = a.o + '.tmp'
    with open(tmp, 'w') as f:
        f.write(code)
    os.replace(tmp, a.o)
    return 0


if __name__ == '__main__':
    sys.exit(main())
