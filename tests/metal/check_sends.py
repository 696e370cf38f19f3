#!/usr/bin/env python3
"""Checks every Objective-C message send of metalllm.h's Metal layer against Apple's metal-cpp signatures.

metalllm.h sends messages as MLLM__MSG(R, T1, T2...)(receiver, MLLM__S(m, name), args...), where name is an
entry X(name, "Class", "-selector") of its MLLM__MTL_SELECTORS table. For each send this checks, against
../shared/reference/metal-api (metal-cpp-methods.tsv + supplement.tsv, types.tsv, enums.tsv):
  - the selector exists on the class or protocol the table names;
  - the argument count equals the selector's (its colons) and the table's;
  - each C type of the cast (return and arguments) is the C ABI type of metal-cpp's type
    (NS::UInteger and NSUInteger-based enums: unsigned long; NS::Integer-based: long; bool: BOOL;
    object pointers: id; NS::Error**: id *; MTL::Size: the 3 x NSUInteger struct; blocks: a pointer);
  - no send returns a struct larger than 16 bytes (x86-64 would need objc_msgSend_stret);
  - no selector is registered outside the table, and the enum constants the header hard-codes have
    Apple's values.
It also checks the fake framework's METHOD registrations (tests/metal/fake_metal.cpp) the same way, so
the fake implements exactly Apple's prototypes.
  check_sends.py [--header H] [--fake F] [--api DIR]    exit 1 on any mismatch
  check_sends.py --self-test                             the above, plus planted defects that must fail
"""
import argparse
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def load_api(d):
    methods = {}   # (class, selector) -> (return, [params])
    for fn in ('metal-cpp-methods.tsv', 'supplement.tsv'):
        with open(os.path.join(d, fn)) as f:
            next(f)
            for line in f:
                cols = line.rstrip('\n').split('\t')
                if len(cols) < 3:
                    continue
                params = [p for p in cols[3].split(',') if p] if len(cols) > 3 else []
                methods[(cols[0], cols[1])] = (cols[2], params)
    underlying = {}
    with open(os.path.join(d, 'types.tsv')) as f:
        next(f)
        for line in f:
            cols = line.rstrip('\n').split('\t')
            underlying[cols[0]] = cols[1]
    enums = {}
    with open(os.path.join(d, 'enums.tsv')) as f:
        next(f)
        for line in f:
            cols = line.rstrip('\n').split('\t')
            enums[(cols[0], cols[1])] = int(cols[2])
    return methods, underlying, enums


# metal-cpp classes whose methods an object of a class also has (the ones used here)
PARENTS = {'MTL::ComputeCommandEncoder': ['MTL::CommandEncoder']}
ROOTS = ['NS::Referencing', 'NS::Object']


def lookup(methods, cls, sel):
    for c in [cls] + PARENTS.get(cls, []) + ROOTS:
        if (c, sel) in methods:
            return c, methods[(c, sel)]
    return None, None


def c_type_ok(ctype, mtype, underlying):
    """is C type ctype (from a cast) the ABI type of metal-cpp type mtype?"""
    c = re.sub(r'\s+', ' ', ctype.strip()).replace(' *', '*')
    m = mtype.strip()
    base = m[len('const '):] if m.startswith('const ') else m
    if base in underlying and base not in ('NS::UInteger', 'NS::Integer', 'MTL::Size'):   # enums/options -> integer type
        base = underlying[base]
    if c in ('id', 'Class') or (c == 'id' and m == 'id'):
        return bool(re.match(r'^(const )?(MTL|NS)::\w+\*$', m)) or m == 'id'
    if c == 'id*':
        return m == 'NS::Error**'
    if c in ('mllm__nsuint', 'NSUInteger'):
        return base == 'NS::UInteger'
    if c in ('mllm__nsint', 'NSInteger'):
        return base == 'NS::Integer'
    if c in ('mllm__objc_bool', 'BOOL'):
        return m == 'bool'
    if c in ('mllm__mtl_size', 'MTLSize'):
        return base == 'MTL::Size'
    if c in ('mllm__objc_block', 'Block'):
        return m.startswith('void (^)') or m.endswith('Block') or m.endswith('Handler')
    if c == 'dispatch_data_t':
        return base == 'dispatch_data_t'
    if c in ('const void*', 'void*', 'const char*', 'void'):
        return m.replace(' *', '*') == c
    return False


def strip_comments(s):
    out, i, n = [], 0, len(s)
    while i < n:
        if s.startswith('/*', i):
            j = s.find('*/', i + 2)
            out.append(' ' * (j + 2 - i) if j >= 0 else '')
            i = j + 2 if j >= 0 else n
        elif s.startswith('//', i):
            j = s.find('\n', i)
            i = j if j >= 0 else n
        elif s[i] in '"\'':
            q, j = s[i], i + 1
            while j < n and s[j] != q:
                j += 2 if s[j] == '\\' else 1
            out.append(s[i:j + 1])
            i = j + 1
        else:
            out.append(s[i])
            i += 1
    return ''.join(out)


def balanced(s, i):
    """s[i] == '(' -> (inside text, index after the closing paren)"""
    depth, j = 0, i
    while j < len(s):
        if s[j] == '(':
            depth += 1
        elif s[j] == ')':
            depth -= 1
            if depth == 0:
                return s[i + 1:j], j + 1
        j += 1
    raise ValueError('unbalanced parentheses at %d' % i)


def split_top(s):
    parts, depth, cur = [], 0, ''
    for ch in s:
        if ch == ',' and depth == 0:
            parts.append(cur.strip())
            cur = ''
            continue
        depth += ch in '(['
        depth -= ch in ')]'
        cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def check_signature(where, cls, sel, ret, params, methods, underlying, errors):
    found, sig = lookup(methods, cls, sel)
    if not sig:
        errors.append('%s: %s %s: no such selector on %s (or its parents) in metal-cpp' % (where, cls, sel, cls))
        return
    mret, mparams = sig
    arity = sel.count(':')
    if len(params) != arity or len(mparams) != arity:
        errors.append('%s: %s %s: %d argument type(s), the selector takes %d' % (where, cls, sel, len(params), arity))
        return
    if not c_type_ok(ret, mret, underlying):
        errors.append('%s: %s %s: returns %s, metal-cpp says %s' % (where, cls, sel, ret, mret))
    for k, (c, m) in enumerate(zip(params, mparams)):
        if not c_type_ok(c, m, underlying):
            errors.append('%s: %s %s: argument %d is %s, metal-cpp says %s' % (where, cls, sel, k + 1, c, m))
    if ret.strip() in ('mllm__mtl_size', 'MTLSize'):
        errors.append('%s: %s %s returns a 24-byte struct: needs objc_msgSend_stret on x86-64' % (where, cls, sel))


ENUMS = {   # header constant -> (metal-api enum, name)
    'MLLM__MTL_STORAGE_SHARED': ('MTL::ResourceOptions', 'ResourceStorageModeShared'),
    'MLLM__MTL_STORAGE_PRIVATE': ('MTL::ResourceOptions', 'ResourceStorageModePrivate'),
    'MLLM__MTL_DISPATCH_CONCURRENT': ('MTL::DispatchType', 'DispatchTypeConcurrent'),
    'MLLM__MTL_BARRIER_BUFFERS': ('MTL::BarrierScope', 'BarrierScopeBuffers'),
    'MLLM__MTL_STATUS_COMPLETED': ('MTL::CommandBufferStatus', 'CommandBufferStatusCompleted'),
    'MLLM__MTL_STATUS_ERROR': ('MTL::CommandBufferStatus', 'CommandBufferStatusError'),
    'MLLM__MTL_FAMILY_APPLE7': ('MTL::GPUFamily', 'GPUFamilyApple7'),
    'MLLM__NS_UTF8': ('NS::StringEncoding', 'UTF8StringEncoding'),
}


def check_header(text, api):
    methods, underlying, enums = api
    errors = []
    t = text.find('#define MLLM__MTL_SELECTORS')   # the Metal layer: the #if section holding the selector table
    a = text.rfind('#if MLLM__HAVE_METAL', 0, t) if t >= 0 else -1
    b = text.find('#endif /* MLLM__HAVE_METAL || MLLM__FORCE_METAL_STUBS */', t)
    if a < 0 or b < 0:
        return ['the Metal section of the header was not found'], 0
    sec = strip_comments(text[a:b])
    table = {}
    for name, cls, sel in re.findall(r'X\((\w+),\s*"([^"]+)",\s*"([^"]+)"\)', sec):
        table[name] = (cls, sel)
    if not table:
        errors.append('no MLLM__MTL_SELECTORS table')
    n = 0
    used = set()
    for m in re.finditer(r'MLLM__MSG(0?)\(', sec):
        line_start = sec.rfind('\n', 0, m.start()) + 1
        if sec[line_start:m.start()].lstrip().startswith('#define'):
            continue
        types, after = balanced(sec, m.end() - 1)
        where = 'metalllm.h:%d' % (text[:a].count('\n') + sec[:m.start()].count('\n') + 1)
        if after >= len(sec) or sec[after] != '(':
            errors.append('%s: a cast of objc_msgSend that is not called right away' % where)
            continue
        call, _ = balanced(sec, after)
        args = split_top(call)
        types = split_top(types)
        if len(args) < 2 or not re.match(r'MLLM__S\(\s*[\w>.-]+\s*,\s*\w+\s*\)$', args[1]):
            errors.append('%s: second argument of a send is not MLLM__S(m, name): %s' % (where, args[1:2]))
            continue
        name = re.match(r'MLLM__S\(\s*[\w>.-]+\s*,\s*(\w+)\s*\)', args[1]).group(1)
        if name not in table:
            errors.append('%s: selector %s is not in MLLM__MTL_SELECTORS' % (where, name))
            continue
        used.add(name)
        cls, sel = table[name]
        ret, params = types[0], types[1:]
        if m.group(1) == '0' and params:
            errors.append('%s: MLLM__MSG0 with argument types' % where)
        if len(args) - 2 != len(params):
            errors.append('%s: %s %s: %d arguments passed, the cast has %d' % (where, cls, sel, len(args) - 2, len(params)))
        check_signature(where, cls, sel[0] + sel[1:], ret, params, methods, underlying, errors)
        n += 1
    for name in sorted(set(table) - used):
        errors.append('selector %s (%s) in the table is never sent' % (name, table[name][1]))
    if len(re.findall(r'\bsel_registerName\(', sec)) != 1:
        errors.append('sel_registerName must be called only where the table is registered')
    if re.search(r'\bobjc_msgSend\b', sec.replace('(mllm__objc_fn)objc_msgSend', '')):
        errors.append('objc_msgSend used outside mllm__msgsend')
    for const, key in ENUMS.items():
        mm = re.search(r'\b%s\s*=\s*([^,\n]+)' % const, sec)
        if not mm:
            errors.append('constant %s not found' % const)
            continue
        try:
            val = eval(mm.group(1).strip().replace('u', ''), {})
        except Exception:
            errors.append('constant %s: cannot evaluate %s' % (const, mm.group(1)))
            continue
        if enums.get(key) != val:
            errors.append('%s = %s, Apple: %s %s = %s' % (const, val, key[0], key[1], enums.get(key)))
    return errors, n


FAKE_CLASSES = {'NSObject': 'NS::Object', 'NSString': 'NS::String', 'NSError': 'NS::Error',
                'MTLCompileOptions': 'MTL::CompileOptions', 'MTLDevice': 'MTL::Device',
                'MTLCommandQueue': 'MTL::CommandQueue', 'MTLCommandBuffer': 'MTL::CommandBuffer',
                'MTLComputeCommandEncoder': 'MTL::ComputeCommandEncoder', 'MTLBuffer': 'MTL::Buffer',
                'MTLLibrary': 'MTL::Library', 'MTLFunction': 'MTL::Function',
                'MTLComputePipelineState': 'MTL::ComputePipelineState'}


def check_fake(text, api):
    methods, underlying, _ = api
    errors, n = [], 0
    text = strip_comments(text)
    for m in re.finditer(r'METHOD\(\s*"(\w+)"\s*,\s*"([-+][^"]+)"\s*,\s*(\w+)\s*,([^;]*)\);', text):
        if m.group(1) == 'cls':
            continue
        types = split_top(m.group(4))
        where = 'fake_metal.cpp:%d' % (text[:m.start()].count('\n') + 1)
        cls = FAKE_CLASSES.get(m.group(1))
        if not cls:
            errors.append('%s: unknown class %s' % (where, m.group(1)))
            continue
        check_signature(where, cls, m.group(2), types[0], types[1:], methods, underlying, errors)
        n += 1
    if n == 0:
        errors.append('no METHOD registrations found in the fake')
    return errors, n


def run_checks(header, fake, api):
    e1, n1 = check_header(header, api)
    e2, n2 = check_fake(fake, api) if fake is not None else ([], 0)
    return e1 + e2, n1, n2


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--header', default=os.path.join(ROOT, 'metalllm.h'))
    ap.add_argument('--fake', default=os.path.join(HERE, 'fake_metal.cpp'))
    ap.add_argument('--api', default=os.environ.get('MLLM_METAL_API', os.path.join(ROOT, '..', 'shared', 'reference', 'metal-api')))
    ap.add_argument('--self-test', action='store_true')
    a = ap.parse_args()
    if not os.path.isdir(a.api):
        a.api = '/work/shared/reference/metal-api'
    api = load_api(a.api)
    header = open(a.header).read()
    fake = open(a.fake).read() if os.path.exists(a.fake) else None
    passed = failed = 0

    def report(ok, what, detail=()):
        nonlocal passed, failed
        print(('ok   ' if ok else 'FAIL ') + what)
        for d in list(detail)[:10]:
            print('    ' + d)
        passed += ok
        failed += not ok

    errors, n1, n2 = run_checks(header, fake, api)
    report(not errors and n1 > 0, 'metalllm.h: %d message sends match metal-cpp; fake framework: %d methods' % (n1, n2), errors)
    if a.self_test:
        planted = [
            ('wrong type (setBytes: length as uint32_t)', header,
             'MLLM__MSG(void, const void *, mllm__nsuint, mllm__nsuint)(c->enc, MLLM__S(c->m, setBytes)',
             'MLLM__MSG(void, const void *, uint32_t, mllm__nsuint)(c->enc, MLLM__S(c->m, setBytes)', 'argument 2'),
            ('wrong return type (supportsFamily: as int)', header,
             'MLLM__MSG(mllm__objc_bool, mllm__nsint)', 'MLLM__MSG(int, mllm__nsint)', 'returns int'),
            ('wrong arity (setBuffer:offset:atIndex: without the index)', header,
             'MLLM__MSG(void, id, mllm__nsuint, mllm__nsuint)(c->enc, MLLM__S(c->m, setBuffer), b->buf, (mllm__nsuint)offset,\n'
             '                                                    (mllm__nsuint)index);',
             'MLLM__MSG(void, id, mllm__nsuint)(c->enc, MLLM__S(c->m, setBuffer), b->buf, (mllm__nsuint)offset);',
             'argument type(s), the selector takes 3'),
            ('unknown selector (misspelt setThreadGroupMemoryLength:atIndex:)', header,
             '"-setThreadgroupMemoryLength:atIndex:"', '"-setThreadGroupMemoryLength:atIndex:"', 'no such selector'),
            ('wrong enum value (MTLResourceStorageModePrivate as 2)', header,
             'MLLM__MTL_STORAGE_PRIVATE = 2 << 4', 'MLLM__MTL_STORAGE_PRIVATE = 2', 'ResourceStorageModePrivate'),
        ]
        if fake is not None:
            planted.append(('fake: wrong parameter type (supportsFamily: NSUInteger)', fake,
                            'device_supportsFamily, BOOL, NSInteger', 'device_supportsFamily, BOOL, NSUInteger', 'argument 1'))
        for what, src, old, new, expect in planted:
            if src.count(old) != 1:
                report(False, 'planted %s: the text to plant it in is not in the source' % what)
                continue
            bad = src.replace(old, new)
            errs, _, _ = run_checks(bad if src is header else header, bad if src is not header else fake, api)
            report(any(expect in e for e in errs), 'planted %s is caught' % what, errs if not any(expect in e for e in errs) else [errs[0]])
    print('%d passed, %d failed' % (passed, failed))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
