/*
 * asm_amd64.S — goroutine context switch for x86-64 (System V ABI).
 *
 * Ported from the shape of Go's runtime/asm_amd64.s (gogo, mcall), with one
 * difference that matters: these functions are called from C, and the System V
 * ABI makes rbx, rbp, r12-r15, the MXCSR control bits and the x87 control
 * word callee-saved.  Go saves only sp/pc/bp because Go code keeps nothing in
 * registers across calls.  So every save pushes the callee-saved set onto the
 * goroutine's own stack, and the resume point pops it:
 *
 *     high  | return address into the C caller |
 *           | rbp rbx r12 r13 r14 r15          |  6 pushes
 *     sp -> | mxcsr (4 bytes) | x87 cw (2)     |  8-byte slot
 *
 * After the call pushed its return address rsp = 8 mod 16; six pushes and the
 * 8-byte slot make the saved sp 16-byte aligned.
 *
 * Switches happen only at these call boundaries, never by injecting a call
 * into an interrupted context, so RFLAGS and the red zone need no care:
 * the red zone of a function that makes a call holds nothing live.
 */
#include "gobuf.h"

#if defined(__x86_64__) && defined(__linux__)

    .text

/* SAVE_CONTEXT(save): push callee-saved state, record sp/pc/bp in *save. */
#define SAVE_CONTEXT(save)                  \
    pushq %rbp;                             \
    pushq %rbx;                             \
    pushq %r12;                             \
    pushq %r13;                             \
    pushq %r14;                             \
    pushq %r15;                             \
    subq $8, %rsp;                          \
    stmxcsr (%rsp);                         \
    fnstcw 4(%rsp);                         \
    movq %rsp, GOBUF_SP(save);              \
    leaq gl_resume_point(%rip), %rax;       \
    movq %rax, GOBUF_PC(save);              \
    movq %rbp, GOBUF_BP(save)

/* uintptr_t gl_gosave_gogo(gl_gobuf *save (rdi), const gl_gobuf *to (rsi)) */
    .globl gl_gosave_gogo
    .hidden gl_gosave_gogo
    .type gl_gosave_gogo, @function
    .p2align 4
gl_gosave_gogo:
    endbr64
    SAVE_CONTEXT(%rdi)
    movq %rsi, %rdi
    jmp gl_gogo
    .size gl_gosave_gogo, .-gl_gosave_gogo

/* uintptr_t gl_mcall(gl_gobuf *save (rdi), void (*fn)(void *) (rsi),
 *                    void *arg (rdx), uintptr_t sp (rcx)) */
    .globl gl_mcall
    .hidden gl_mcall
    .type gl_mcall, @function
    .p2align 4
gl_mcall:
    endbr64
    SAVE_CONTEXT(%rdi)
    movq %rcx, %rsp             /* the other stack; 16-byte aligned */
    xorl %ebp, %ebp             /* end frame-pointer chains here */
    movq %rdx, %rdi
    call *%rsi
    call gl_mcall_returned      /* fn must not return: fatal */
    ud2
    .size gl_mcall, .-gl_mcall

/* void gl_gogo(const gl_gobuf *buf (rdi)): restore and jump, never returns.
 * rax carries buf->ret to the resume point, rdx carries buf->ctxt to
 * gl_gostart. */
    .globl gl_gogo
    .hidden gl_gogo
    .type gl_gogo, @function
    .p2align 4
gl_gogo:
    endbr64
    movq GOBUF_SP(%rdi), %rsp
    movq GOBUF_RET(%rdi), %rax
    movq GOBUF_CTXT(%rdi), %rdx
    movq GOBUF_BP(%rdi), %rbp
    jmp *GOBUF_PC(%rdi)
    .size gl_gogo, .-gl_gogo

/* Where a saved context continues: undo SAVE_CONTEXT and return rax to the
 * caller of gl_gosave_gogo / gl_mcall. */
    .type gl_resume_point, @function
    .p2align 4
gl_resume_point:
    endbr64
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size gl_resume_point, .-gl_resume_point

/* First code of a new goroutine: rdx = its gl_g, rsp = stack top (16-aligned).
 * The call leaves rsp = 8 mod 16 at gl_goentry's entry, as the ABI wants. */
    .globl gl_gostart
    .hidden gl_gostart
    .type gl_gostart, @function
    .p2align 4
gl_gostart:
    endbr64
    xorl %ebp, %ebp
    movq %rdx, %rdi
    call gl_goentry
    call gl_goentry_returned
    ud2
    .size gl_gostart, .-gl_gostart

#endif

    .section .note.GNU-stack,"",@progbits
