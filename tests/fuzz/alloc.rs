//! A counting allocator: while armed, it records the largest single request and the peak of
//! bytes live above what was live when it was armed. The harness runs one input at a time on
//! one thread, so global counters are enough.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering::Relaxed};

struct Counting;

static ARMED: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);
static BASE: AtomicIsize = AtomicIsize::new(0);

fn note_alloc(size: usize) {
    let live = LIVE.fetch_add(size as isize, Relaxed) + size as isize;
    if ARMED.load(Relaxed) {
        LARGEST.fetch_max(size, Relaxed);
        PEAK.fetch_max(live, Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's own arguments, so the
// allocator contract holds exactly as it does for `System`; the counters only add atomic
// arithmetic and never touch the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: the caller upholds `alloc`'s contract for `layout`.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
        // SAFETY: `ptr` was allocated by `System` (through us) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
        note_alloc(new_size);
        // SAFETY: `ptr` was allocated by `System` with `layout`; the caller upholds the rest.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

pub fn arm() {
    LARGEST.store(0, Relaxed);
    let live = LIVE.load(Relaxed);
    BASE.store(live, Relaxed);
    PEAK.store(live, Relaxed);
    ARMED.store(true, Relaxed);
}

/// (largest single allocation, peak of live bytes above the level at `arm`).
pub fn disarm() -> (usize, usize) {
    ARMED.store(false, Relaxed);
    (
        LARGEST.load(Relaxed),
        (PEAK.load(Relaxed) - BASE.load(Relaxed)).max(0) as usize,
    )
}
