/*
 * rt_regs.h — the register-image layout shared by rt_tests.c and the test
 * helpers in regs_amd64.S / regs_arm64.S.
 *
 * The register tests need to put known values into the callee-saved
 * registers right before a switch and read them right after it, with no
 * compiler-generated code in between that could save and restore them on
 * the assembly's behalf.  That only works in assembly, so the helpers take a
 * register image (an array of 64-bit words) to load and one to store into.
 * This header fixes the word order of that image; it is included from C and
 * from the .S files, so it holds only macros outside the __ASSEMBLER__ guard.
 *
 * x86-64 (System V): rbx rbp r12 r13 r14 r15.
 * AArch64 (AAPCS64): x19..x28, x29, then the low 64 bits of v8..v15 (d8..d15).
 */
#ifndef GOLOOP_RT_REGS_H
#define GOLOOP_RT_REGS_H

#if defined(__x86_64__)
#  define RT_NREGS 6
#  define RT_NGPR 6          /* all of them are general-purpose */
#elif defined(__aarch64__)
#  define RT_NREGS 19
#  define RT_NGPR 11         /* x19..x29 */
#  define RT_FP_FIRST 11     /* d8 is word 11 */
#else
#  define RT_NREGS 1
#  define RT_NGPR 0
#endif

#ifndef __ASSEMBLER__
#include <stdint.h>
#include "gobuf.h"

/* Load in[0..RT_NREGS) into the callee-saved registers, gl_gosave_gogo(save,
 * to), and once resumed store the registers into out[0..RT_NREGS) before
 * anything else touches them.  The caller's own callee-saved registers are
 * preserved, as the ABI requires.  Returns what gl_gosave_gogo returned. */
uintptr_t gl_regs_switch(gl_gobuf *save, const gl_gobuf *to,
                         const uint64_t *in, uint64_t *out);

/* First code of a bare context built by the tests (not a gl_g): gl_gogo
 * jumps here with ctxt pointing at a gl_test_entry; it calls fn(arg) on the
 * fresh stack, which must never return. */
typedef struct gl_test_entry {
    void (*fn)(void *);
    void *arg;
} gl_test_entry;
void gl_test_ctx_entry(void);

/* The stack pointer of the caller at its call instruction, which the ABI
 * requires to be 16-byte aligned on both architectures. */
uintptr_t gl_test_sp_at_call(void);
#endif

#endif /* GOLOOP_RT_REGS_H */
