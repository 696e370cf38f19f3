#!/usr/bin/env python3
"""sg_mma_model.py - a CPU model of gen/cuda/metal_shim.h's tensor-core simdgroup_multiply_accumulate: the
shuffle indices that carry Apple's 8x8 fragments into the PTX m16n8k8 TF32 A/B fragments and the output
back, checked on random integer matrices (the lo halves of 3xTF32 are 0 here).  Run it after changing them."""
import random
def apple(l): return (((l>>4)&1)*4+((l>>1)&3), ((l>>3)&1)*4+(l&1)*2)
A=[[random.randint(-9,9) for _ in range(8)] for _ in range(8)]
B=[[random.randint(-9,9) for _ in range(8)] for _ in range(8)]
C=[[random.randint(-9,9) for _ in range(8)] for _ in range(8)]
def frag(M): return [[M[apple(l)[0]][apple(l)[1]+e] for e in range(2)] for l in range(32)]
a,b,c=frag(A),frag(B),frag(C)
def shfl(vals, idx): return [vals[idx[l]] for l in range(32)]
bits=lambda l:(l&1,(l>>1)&1,(l>>2)&1,(l>>3)&1,l>>4)
sa=[];sb=[];sd=[];v0=[];v1=[]
for l in range(32):
    l0,l1,l2,l3,l4=bits(l)
    sa.append((l4<<4)|(l1<<3)|(l3<<2)|(l2<<1)|l0)
    sb.append((l1<<4)|(l4<<3)|(l0<<2)|l3)
    sd.append((l4<<4)|(l2<<3)|(l1<<2)|(l3<<1)|l0)
    v0.append(b[l][1] if l1 else b[l][0]); v1.append(b[l][0] if l1 else b[l][1])
x0=shfl([a[l][0] for l in range(32)],sa); x1=shfl([a[l][1] for l in range(32)],sa)
r0=shfl(v0,[sb[l]|(((l>>2)&1)<<1) for l in range(32)]); r1=shfl(v1,[sb[l]|((((l>>2)&1)^1)<<1) for l in range(32)])
y0=[r1[l] if (l>>2)&1 else r0[l] for l in range(32)]; y1=[r0[l] if (l>>2)&1 else r1[l] for l in range(32)]
# reconstruct mma operands per PTX layout (only rows 0-7 of A = hi part; lo omitted: exact ints)
Am=[[None]*8 for _ in range(16)]; Bm=[[None]*8 for _ in range(8)]
for l in range(32):
    g,t=l>>2,l&3
    Am[g][t]=x0[l]; Am[g][t+4]=x1[l]; Am[g+8][t]=0; Am[g+8][t+4]=0
    Bm[t][g]=y0[l]; Bm[t+4][g]=y1[l]
Dm=[[sum(Am[i][k]*Bm[k][j] for k in range(8)) for j in range(8)] for i in range(16)]
p0=[Dm[l>>2][2*(l&3)]+Dm[(l>>2)+8][2*(l&3)] for l in range(32)]
p1=[Dm[l>>2][2*(l&3)+1]+Dm[(l>>2)+8][2*(l&3)+1] for l in range(32)]
d=[[c[l][0]+shfl(p0,sd)[l], c[l][1]+shfl(p1,sd)[l]] for l in range(32)]
D=[[sum(A[i][k]*B[k][j] for k in range(8))+C[i][j] for j in range(8)] for i in range(8)]
assert d==frag(D), "mismatch"
print("ok")
