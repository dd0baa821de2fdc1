/*
 * regs_arm64.S — AArch64 helpers for the runtime's register and alignment
 * tests (rt_tests.c); the twin of regs_amd64.S.  Assembled on every
 * architecture; empty except on AArch64.
 *
 * gl_regs_switch(save x0, to x1, in x2, out x3) holds known values in every
 * AAPCS64 callee-saved register across gl_gosave_gogo, so a test can prove
 * the switch keeps them (a C caller could not: the compiler would save and
 * restore them itself, hiding a bug):
 *
 *   1. saves its caller's x19-x28, x29/x30, d8-d15 and `out` in a 176-byte
 *      frame (16-byte aligned, as sp must always be on AArch64);
 *   2. loads in[0..18] into x19..x28, x29, d8..d15 (rt_regs.h);
 *   3. bl gl_gosave_gogo(save, to) — the other context runs its own
 *      gl_regs_switch with other values, clobbering all of them;
 *   4. once resumed, stores the registers into out[] first thing, using
 *      only caller-saved x9 as a pointer;
 *   5. restores its caller's registers and returns.
 *
 * x30 is not in the image: bl overwrites it, and a switch that lost it
 * could not return at all.
 *
 * gl_test_ctx_entry starts a bare context (no gl_g): gl_gogo leaves the
 * Gobuf's ctxt in x26, a gl_test_entry {fn, arg}; sp is the stack top.
 * gl_test_sp_at_call returns sp, which on AArch64 is the caller's sp at the
 * call (bl pushes nothing).
 */
#include "rt_regs.h"

#if defined(__aarch64__) && defined(__linux__)

    .text

#define FRAME 176

    .globl gl_regs_switch
    .hidden gl_regs_switch
    .type gl_regs_switch, %function
    .p2align 4
gl_regs_switch:
    sub sp, sp, #FRAME
    stp x19, x20, [sp, #0]
    stp x21, x22, [sp, #16]
    stp x23, x24, [sp, #32]
    stp x25, x26, [sp, #48]
    stp x27, x28, [sp, #64]
    stp x29, x30, [sp, #80]
    stp d8, d9, [sp, #96]
    stp d10, d11, [sp, #112]
    stp d12, d13, [sp, #128]
    stp d14, d15, [sp, #144]
    str x3, [sp, #160]              /* out */
    ldp x19, x20, [x2, #0]
    ldp x21, x22, [x2, #16]
    ldp x23, x24, [x2, #32]
    ldp x25, x26, [x2, #48]
    ldp x27, x28, [x2, #64]
    ldr x29, [x2, #80]
    ldp d8, d9, [x2, #88]
    ldp d10, d11, [x2, #104]
    ldp d12, d13, [x2, #120]
    ldp d14, d15, [x2, #136]
    bl gl_gosave_gogo               /* x0, x1 untouched since entry */
    ldr x9, [sp, #160]
    stp x19, x20, [x9, #0]
    stp x21, x22, [x9, #16]
    stp x23, x24, [x9, #32]
    stp x25, x26, [x9, #48]
    stp x27, x28, [x9, #64]
    str x29, [x9, #80]
    stp d8, d9, [x9, #88]
    stp d10, d11, [x9, #104]
    stp d12, d13, [x9, #120]
    stp d14, d15, [x9, #136]
    ldp x19, x20, [sp, #0]
    ldp x21, x22, [sp, #16]
    ldp x23, x24, [sp, #32]
    ldp x25, x26, [sp, #48]
    ldp x27, x28, [sp, #64]
    ldp x29, x30, [sp, #80]
    ldp d8, d9, [sp, #96]
    ldp d10, d11, [sp, #112]
    ldp d12, d13, [sp, #128]
    ldp d14, d15, [sp, #144]
    add sp, sp, #FRAME
    ret
    .size gl_regs_switch, .-gl_regs_switch

/* void gl_test_ctx_entry(void): x26 = gl_test_entry *, sp = stack top */
    .globl gl_test_ctx_entry
    .hidden gl_test_ctx_entry
    .type gl_test_ctx_entry, %function
    .p2align 4
gl_test_ctx_entry:
    mov x29, xzr
    mov x30, xzr
    ldr x0, [x26, #8]               /* arg */
    ldr x9, [x26, #0]               /* fn */
    blr x9
    brk #0                          /* fn must not return */
    .size gl_test_ctx_entry, .-gl_test_ctx_entry

/* uintptr_t gl_test_sp_at_call(void) */
    .globl gl_test_sp_at_call
    .hidden gl_test_sp_at_call
    .type gl_test_sp_at_call, %function
    .p2align 4
gl_test_sp_at_call:
    mov x0, sp
    ret
    .size gl_test_sp_at_call, .-gl_test_sp_at_call

#endif

    .section .note.GNU-stack,"",%progbits
