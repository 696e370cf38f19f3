/* Exits 0 when AMX tiles can run here.  Some VMs report amx_tile in cpuid and grant the XTILEDATA
   permission, yet fault on the first tile instruction; a llama.cpp built with -march=native there dies
   with SIGILL (tests/peer/build_llamacpp.sh builds it without AMX then). */
#include <immintrin.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>

int main(void) {
    unsigned char cfg[64];
    if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */)) return 1;
    memset(cfg, 0, sizeof cfg);
    cfg[0] = 1;    /* palette 1 */
    cfg[16] = 64;  /* tile 0: 64 bytes a row */
    cfg[48] = 16;  /* 16 rows */
    _tile_loadconfig(cfg);
    _tile_zero(0);
    _tile_release();
    return 0;
}
