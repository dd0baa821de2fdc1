/*
 * stack.c — goroutine stacks: mapping, guard page, cache, trimming.
 *
 * A stack is one anonymous mapping: a PROT_NONE guard page at the bottom (so
 * running off the end faults instead of corrupting the heap; overflow.c turns
 * the fault into a clear message) and `size` usable bytes above it.  The
 * gl_stack descriptor lives in the top bytes of the mapping itself, so a
 * stack costs no allocation beyond its mmap.  Pages are committed lazily by
 * the kernel as the goroutine touches them (MAP_NORESERVE), so a large
 * reserved size costs address space, not memory.
 *
 *     base            lo                                   hi   base+len
 *     | guard (1 page) | usable, grows down  <-----------  | desc |
 *
 * Stacks are never copied or moved: C and CPython keep pointers into them.
 *
 * valgrind is told that each mapping is a stack while it is mapped, and
 * that the went-deep probe below reads a dead part of one on purpose
 * (sanitizer.h).
 *
 * Starting a goroutine must not cost an mmap, so finished stacks go to a
 * cache (a mutex-protected free list; the mutex is uncontended in practice:
 * goroutines start and finish on their loop's thread).  A cached stack that
 * was used deeply gives its deep pages back with MADV_DONTNEED, keeping the
 * top `trim_keep` bytes warm.  "Used deeply" is detected without a syscall:
 * untouched anonymous memory reads as zero, so any non-zero word in the page
 * just below the kept region means the goroutine went deeper (the switch code
 * also records the lowest sp it saw, which catches frames of zeros).
 */
#define _GNU_SOURCE
#include "runtime.h"
#include "sanitizer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <unistd.h>

#define DESC_SPACE 64   /* bytes at the top of the mapping for gl_stack */

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static gl_stack *cache_head;
static size_t cache_count;
static size_t cache_limit = 64;
static _Atomic size_t default_size = GL_STACK_DEFAULT;
static _Atomic size_t trim_keep = 64 * 1024;

static _Atomic uint64_t n_in_use, n_mapped, n_reused, n_trimmed;

_Static_assert(sizeof(gl_stack) <= DESC_SPACE, "gl_stack must fit its slot");

#if GL_VALGRIND
/* A valgrind build keeps the stack's registration id next to the descriptor,
 * in the same slot: gl_stack itself is the same in every build. */
typedef struct vg_desc {
    gl_stack stack;
    unsigned vg_id;
} vg_desc;
_Static_assert(sizeof(vg_desc) <= DESC_SPACE, "vg_desc must fit the slot");
#endif

/* Tell valgrind that s is a stack (once mapped) or no longer one (before
 * it is unmapped).  Nothing in other builds. */
static void stack_vg_register(gl_stack *s)
{
#if GL_VALGRIND
    ((vg_desc *)s)->vg_id = gl_vg_stack_register(s->lo, s->hi);
#else
    (void)s;
#endif
}

static void stack_vg_deregister(gl_stack *s)
{
#if GL_VALGRIND
    gl_vg_stack_deregister(((vg_desc *)s)->vg_id);
#else
    (void)s;
#endif
}

size_t gl_page_size(void)
{
    static size_t page;
    if (page == 0)
        page = (size_t)sysconf(_SC_PAGESIZE);
    return page;
}

int gl_stack_size_normalize(size_t size, size_t *out)
{
    size_t page = gl_page_size();
    if (size < GL_STACK_MIN || size > GL_STACK_MAX)
        return GL_EINVAL;
    *out = (size + page - 1) & ~(page - 1);
    return GL_OK;
}

int gl_set_default_stack_size(size_t size)
{
    size_t norm;
    int err = gl_stack_size_normalize(size, &norm);
    if (err == GL_OK)
        atomic_store(&default_size, norm);
    return err;
}

size_t gl_default_stack_size(void) { return atomic_load(&default_size); }

void gl_set_stack_trim_keep(size_t bytes) { atomic_store(&trim_keep, bytes); }

static void stack_unmap(gl_stack *s)
{
    size_t page = gl_page_size();
    uintptr_t base = s->lo - page;
    size_t len = page + s->size;
    stack_vg_deregister(s);
    munmap((void *)base, len);
}

static gl_stack *stack_map(size_t size)
{
    size_t page = gl_page_size();
    size_t len = page + size;
    void *base = mmap(NULL, len, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK,
                      -1, 0);
    if (base == MAP_FAILED)
        return NULL;
    if (mprotect(base, page, PROT_NONE) != 0) {
        munmap(base, len);
        return NULL;
    }
    gl_stack *s = (gl_stack *)((char *)base + len - DESC_SPACE);
    s->lo = (uintptr_t)base + page;
    s->hi = (uintptr_t)s;           /* 64-byte aligned: len is page-aligned */
    s->size = size;
    s->low_water = s->hi;
    s->next = NULL;
    stack_vg_register(s);
    atomic_fetch_add(&n_mapped, 1);
    return s;
}

gl_stack *gl_stack_get(size_t size)
{
    gl_stack *s = NULL;
    pthread_mutex_lock(&cache_lock);
    for (gl_stack **pp = &cache_head; *pp; pp = &(*pp)->next) {
        if ((*pp)->size == size) {
            s = *pp;
            *pp = s->next;
            cache_count--;
            break;
        }
    }
    pthread_mutex_unlock(&cache_lock);
    if (s)
        atomic_fetch_add(&n_reused, 1);
    else if ((s = stack_map(size)) == NULL)
        return NULL;
    s->next = NULL;
    s->low_water = s->hi;
    atomic_fetch_add(&n_in_use, 1);
    return s;
}

/* Did the goroutine touch memory below hi - keep?  See the file comment. */
static int stack_went_deep(const gl_stack *s, size_t keep)
{
    size_t page = gl_page_size();
    uintptr_t limit = (s->hi - keep) & ~(page - 1);
    if (limit <= s->lo)
        return 0;
    if (s->low_water < limit)
        return 1;
    const uintptr_t *w = (const uintptr_t *)(limit - page);
    gl_vg_dead_stack_read(limit - page, page);
    for (size_t i = 0; i < page / sizeof(uintptr_t); i++)
        if (w[i] != 0)
            return 1;
    return 0;
}

static void stack_trim(gl_stack *s, size_t keep)
{
    size_t page = gl_page_size();
    uintptr_t limit = (s->hi - keep) & ~(page - 1);
    madvise((void *)s->lo, limit - s->lo, MADV_DONTNEED);
    atomic_fetch_add(&n_trimmed, 1);
}

void gl_stack_put(gl_stack *s)
{
    size_t keep = atomic_load(&trim_keep);
    atomic_fetch_sub(&n_in_use, 1);
    if (s->size == atomic_load(&default_size)) {
        if (stack_went_deep(s, keep))
            stack_trim(s, keep);
        pthread_mutex_lock(&cache_lock);
        if (cache_count < cache_limit) {
            s->next = cache_head;
            cache_head = s;
            cache_count++;
            s = NULL;
        }
        pthread_mutex_unlock(&cache_lock);
    }
    if (s)
        stack_unmap(s);
}

void gl_set_stack_cache_limit(size_t n)
{
    gl_stack *drop = NULL;
    pthread_mutex_lock(&cache_lock);
    cache_limit = n;
    while (cache_count > cache_limit) {
        gl_stack *s = cache_head;
        cache_head = s->next;
        cache_count--;
        s->next = drop;
        drop = s;
    }
    pthread_mutex_unlock(&cache_lock);
    while (drop) {
        gl_stack *next = drop->next;
        stack_unmap(drop);
        drop = next;
    }
}

void gl_stack_stats(gl_stats *out)
{
    pthread_mutex_lock(&cache_lock);
    out->stacks_cached = cache_count;
    pthread_mutex_unlock(&cache_lock);
    out->stacks_in_use = atomic_load(&n_in_use);
    out->stacks_mapped = atomic_load(&n_mapped);
    out->stacks_reused = atomic_load(&n_reused);
    out->stacks_trimmed = atomic_load(&n_trimmed);
}
