/*
 * gobuf.h — the saved machine context of a goroutine, shared by C and assembly.
 *
 * A Gobuf holds what is needed to resume a goroutine that stopped at a call
 * boundary: its stack pointer and the address to continue at.  The layout is
 * Go's runtime.gobuf (sp, pc, g, ctxt, ret, lr, bp).  Go itself saves only
 * sp/pc/bp because Go's ABI has no callee-saved registers; C has them, so the
 * assembly pushes the platform's callee-saved registers onto the goroutine's
 * own stack before it records sp, and pops them on resume (see asm_*.S).
 *
 *   sp    stack pointer after the callee-saved registers were pushed
 *   pc    where gl_gogo jumps: the resume point, or gl_gostart for a new G
 *   g     the goroutine this buffer belongs to (for debuggers; unused by asm)
 *   ctxt  handed to a new goroutine's entry (x86-64: %rdx, AArch64: x26)
 *   ret   value the resumed gl_mcall/gl_gosave_gogo call returns
 *   lr    AArch64 link register at save time (informational)
 *   bp    frame pointer at save time (informational; the real one is pushed)
 *
 * The offsets below are used by the assembly; gl_runtime.c checks them
 * against offsetof() with static asserts.  This header must stay includable
 * from .S files: macros only outside the __ASSEMBLER__ guard.
 */
#ifndef GOLOOP_GOBUF_H
#define GOLOOP_GOBUF_H

#define GOBUF_SP   0
#define GOBUF_PC   8
#define GOBUF_G    16
#define GOBUF_CTXT 24
#define GOBUF_RET  32
#define GOBUF_LR   40
#define GOBUF_BP   48
#define GOBUF_SIZE 56

#if defined(__x86_64__) && defined(__linux__)
#  define GL_ARCH_NAME "x86-64"
#  define GL_ARCH_SUPPORTED 1
#elif defined(__aarch64__) && defined(__linux__)
#  define GL_ARCH_NAME "AArch64"
#  define GL_ARCH_SUPPORTED 1
#else
#  define GL_ARCH_NAME "unsupported"
#  define GL_ARCH_SUPPORTED 0
#endif

#ifndef __ASSEMBLER__
#include <stdint.h>

struct gl_g;

typedef struct gl_gobuf {
    uintptr_t sp;
    uintptr_t pc;
    struct gl_g *g;
    uintptr_t ctxt;
    uintptr_t ret;
    uintptr_t lr;
    uintptr_t bp;
} gl_gobuf;

/* Save the current context into *save, then resume *to.  Returns, later,
 * the `ret` of the Gobuf that resumes *save.  The fastest switch: used for
 * park and resume. */
uintptr_t gl_gosave_gogo(gl_gobuf *save, const gl_gobuf *to);

/* Go's mcall: save the current context into *save, switch to the stack whose
 * top is `sp` (16-byte aligned) and call fn(arg) there.  fn must not return;
 * it ends with gl_gogo.  Used when the current stack must be left before it
 * can be released (goroutine exit). */
uintptr_t gl_mcall(gl_gobuf *save, void (*fn)(void *), void *arg, uintptr_t sp);

/* Go's gogo: restore *buf and continue there.  Never returns. */
__attribute__((noreturn)) void gl_gogo(const gl_gobuf *buf);

/* Entry trampoline of a new goroutine: gl_gogo jumps here with ctxt holding
 * the gl_g; it calls gl_goentry(g) with a 16-byte aligned stack. */
void gl_gostart(void);

#endif /* __ASSEMBLER__ */
#endif /* GOLOOP_GOBUF_H */
