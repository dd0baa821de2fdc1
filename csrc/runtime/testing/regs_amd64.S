/*
 * regs_amd64.S — x86-64 helpers for the runtime's register and alignment
 * tests (rt_tests.c).  Assembled on every architecture; empty except on
 * x86-64.
 *
 * Why assembly: to prove that gl_gosave_gogo keeps rbx, rbp and r12-r15, a
 * test must hold known values in exactly those registers across the switch.
 * A C caller cannot: the compiler may keep nothing there, or save and
 * restore them itself and hide a bug.  gl_regs_switch therefore:
 *
 *   1. pushes its caller's rbp rbx r12-r15 (it is an ordinary callee, the
 *      ABI applies to it too) and the `out` pointer;
 *   2. loads in[0..5] into rbx rbp r12 r13 r14 r15;
 *   3. calls gl_gosave_gogo(save, to) — the context switched to runs its own
 *      gl_regs_switch with other values, clobbering all six;
 *   4. once resumed, stores the six registers into out[0..5] first thing,
 *      using only caller-saved rcx as a pointer;
 *   5. restores its caller's registers and returns.
 *
 * Stack at step 3: entry rsp = 8 mod 16, seven pushes make it 0 mod 16, so
 * the call site is aligned as the ABI wants.
 *
 * gl_test_ctx_entry starts a bare context (no gl_g): gl_gogo leaves the
 * Gobuf's ctxt in rdx, a gl_test_entry {fn, arg}; rsp is the stack top
 * (16-aligned), so after the call fn sees rsp = 8 mod 16.
 *
 * gl_test_sp_at_call returns rsp + 8: the caller's rsp at its call
 * instruction, which must be 0 mod 16.
 */
#include "rt_regs.h"

#if defined(__x86_64__) && defined(__linux__)

    .text

/* uintptr_t gl_regs_switch(gl_gobuf *save (rdi), const gl_gobuf *to (rsi),
 *                          const uint64_t *in (rdx), uint64_t *out (rcx)) */
    .globl gl_regs_switch
    .hidden gl_regs_switch
    .type gl_regs_switch, @function
    .p2align 4
gl_regs_switch:
    endbr64
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    pushq %rcx                  /* out */
    movq 0(%rdx), %rbx
    movq 8(%rdx), %rbp
    movq 16(%rdx), %r12
    movq 24(%rdx), %r13
    movq 32(%rdx), %r14
    movq 40(%rdx), %r15
    call gl_gosave_gogo         /* rdi, rsi untouched since entry */
    movq (%rsp), %rcx
    movq %rbx, 0(%rcx)
    movq %rbp, 8(%rcx)
    movq %r12, 16(%rcx)
    movq %r13, 24(%rcx)
    movq %r14, 32(%rcx)
    movq %r15, 40(%rcx)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size gl_regs_switch, .-gl_regs_switch

/* void gl_test_ctx_entry(void): rdx = gl_test_entry *, rsp = stack top */
    .globl gl_test_ctx_entry
    .hidden gl_test_ctx_entry
    .type gl_test_ctx_entry, @function
    .p2align 4
gl_test_ctx_entry:
    endbr64
    xorl %ebp, %ebp
    movq 8(%rdx), %rdi          /* arg */
    call *0(%rdx)               /* fn */
    ud2                         /* fn must not return */
    .size gl_test_ctx_entry, .-gl_test_ctx_entry

/* uintptr_t gl_test_sp_at_call(void) */
    .globl gl_test_sp_at_call
    .hidden gl_test_sp_at_call
    .type gl_test_sp_at_call, @function
    .p2align 4
gl_test_sp_at_call:
    endbr64
    leaq 8(%rsp), %rax
    ret
    .size gl_test_sp_at_call, .-gl_test_sp_at_call

#endif

    .section .note.GNU-stack,"",@progbits
