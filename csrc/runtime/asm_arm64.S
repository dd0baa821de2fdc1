/*
 * asm_arm64.S — goroutine context switch for AArch64 (AAPCS64).
 *
 * The AArch64 twin of asm_amd64.S, after Go's runtime/asm_arm64.s (gogo,
 * mcall).  Called from C, so it preserves the AAPCS64 callee-saved set:
 * x19-x28, the frame pointer x29, the link register x30, the low halves
 * d8-d15 of v8-v15, and FPCR (the rounding/trap control register, the
 * counterpart of x86's MXCSR).  The save area, pushed on the goroutine's own
 * stack, is 176 bytes (16-byte aligned as AArch64 requires of sp):
 *
 *     sp+0   x19 x20 x21 x22 x23 x24 x25 x26 x27 x28   (80 bytes)
 *     sp+80  x29 x30                                     (16 bytes)
 *     sp+96  d8 .. d15                                   (64 bytes)
 *     sp+160 fpcr, padding                               (16 bytes)
 *
 * gl_gogo passes buf->ret in x0 to the resume point and buf->ctxt in x26
 * (Go's context register) to gl_gostart.
 */
#include "gobuf.h"

#if defined(__aarch64__) && defined(__linux__)

    .text

#define FRAME 176

#define SAVE_CONTEXT(save)                  \
    sub sp, sp, #FRAME;                     \
    stp x19, x20, [sp, #0];                 \
    stp x21, x22, [sp, #16];                \
    stp x23, x24, [sp, #32];                \
    stp x25, x26, [sp, #48];                \
    stp x27, x28, [sp, #64];                \
    stp x29, x30, [sp, #80];                \
    stp d8, d9, [sp, #96];                  \
    stp d10, d11, [sp, #112];               \
    stp d12, d13, [sp, #128];               \
    stp d14, d15, [sp, #144];               \
    mrs x9, fpcr;                           \
    str x9, [sp, #160];                     \
    mov x9, sp;                             \
    str x9, [save, #GOBUF_SP];              \
    adr x9, gl_resume_point;                \
    str x9, [save, #GOBUF_PC];              \
    str x29, [save, #GOBUF_BP];             \
    str x30, [save, #GOBUF_LR]

/* uintptr_t gl_gosave_gogo(gl_gobuf *save (x0), const gl_gobuf *to (x1)) */
    .globl gl_gosave_gogo
    .hidden gl_gosave_gogo
    .type gl_gosave_gogo, %function
    .p2align 4
gl_gosave_gogo:
    SAVE_CONTEXT(x0)
    mov x0, x1
    b gl_gogo
    .size gl_gosave_gogo, .-gl_gosave_gogo

/* uintptr_t gl_mcall(gl_gobuf *save (x0), void (*fn)(void *) (x1),
 *                    void *arg (x2), uintptr_t sp (x3)) */
    .globl gl_mcall
    .hidden gl_mcall
    .type gl_mcall, %function
    .p2align 4
gl_mcall:
    SAVE_CONTEXT(x0)
    mov sp, x3
    mov x29, xzr
    mov x0, x2
    blr x1
    bl gl_mcall_returned
    brk #0
    .size gl_mcall, .-gl_mcall

/* void gl_gogo(const gl_gobuf *buf (x0)) */
    .globl gl_gogo
    .hidden gl_gogo
    .type gl_gogo, %function
    .p2align 4
gl_gogo:
    ldr x9, [x0, #GOBUF_SP]
    mov sp, x9
    ldr x26, [x0, #GOBUF_CTXT]
    ldr x9, [x0, #GOBUF_PC]
    ldr x0, [x0, #GOBUF_RET]
    br x9
    .size gl_gogo, .-gl_gogo

    .type gl_resume_point, %function
    .p2align 4
gl_resume_point:
    ldr x9, [sp, #160]
    msr fpcr, x9
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
    .size gl_resume_point, .-gl_resume_point

/* First code of a new goroutine: x26 = its gl_g, sp = stack top. */
    .globl gl_gostart
    .hidden gl_gostart
    .type gl_gostart, %function
    .p2align 4
gl_gostart:
    mov x29, xzr
    mov x30, xzr
    mov x0, x26
    bl gl_goentry
    bl gl_goentry_returned
    brk #0
    .size gl_gostart, .-gl_gostart

#endif

    .section .note.GNU-stack,"",%progbits
