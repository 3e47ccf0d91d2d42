//! What making and cloning an [`ObjectRef`] allocates: the gateway makes one for every HTTP
//! request (issue #13), so each allocation here is paid per request. Counted by a global
//! allocator that counts the calling thread's allocations only (the node's workers
//! allocate meanwhile on theirs).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use cairn::prelude::*;

const T: Duration = Duration::from_secs(10);

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

struct Counting;

fn count() {
    // `try_with`: the allocator also runs while a thread's locals are torn down.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is passed on unchanged to the system allocator, which upholds
// `GlobalAlloc`'s contract; counting touches a const-initialized thread local, which
// neither allocates nor unwinds.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's `layout` contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: `ptr` came from this allocator, that is from `System`, with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// `f`'s result and how many allocations this thread made running it.
fn allocations<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = ALLOCATIONS.with(Cell::get);
    let result = f();
    (result, ALLOCATIONS.with(Cell::get) - before)
}

/// Counts the messages its activation took (in memory only).
struct Tally {
    seen: u64,
}

impl Object for Tally {
    const CLASS: &'static str = "tally";
    type Msg = Reply<u64>;

    async fn activate(_ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
        Ok(Tally { seen: 0 })
    }

    async fn handle(
        &mut self,
        reply: Reply<u64>,
        _ctx: &mut ObjectCtx<Self>,
    ) -> Result<(), ActorError> {
        self.seen += 1;
        let _ = reply.send(self.seen);
        Ok(())
    }
}

#[test]
fn a_reference_costs_two_allocations_and_a_clone_none() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::builder()
        .workers(1)
        .data_dir(dir.path())
        .start()
        .unwrap();
    node.host_local::<Tally>();

    // Its name and its key; the activation cache is held in the reference.
    let (tally, n) = allocations(|| node.object::<Tally>("some-key"));
    assert_eq!(n, 2, "allocations to make a reference");
    // With a location hint, the hint is a third.
    let (_, n) = allocations(|| node.object_in::<Tally>("some-key", "eu"));
    assert_eq!(n, 3, "allocations to make a reference with a hint");
    // A key too long to assemble the name on the stack: the name is copied once more.
    let long = "k".repeat(300);
    let (_, n) = allocations(|| node.object::<Tally>(&long));
    assert_eq!(n, 3, "allocations to make a reference with a long key");

    // A clone made before the object is active and one made after each find the same
    // activation (each has a cache of its own), and cloning never allocates.
    let (early, n) = allocations(|| tally.clone());
    assert_eq!(n, 0, "allocations to clone a reference");
    assert_eq!(node.block_on(tally.call(|r| r, T)).unwrap(), 1);
    let (late, n) = allocations(|| tally.clone());
    assert_eq!(n, 0, "allocations to clone a reference");
    assert_eq!(node.block_on(early.call(|r| r, T)).unwrap(), 2);
    assert_eq!(node.block_on(late.call(|r| r, T)).unwrap(), 3);
    assert_eq!(node.block_on(tally.call(|r| r, T)).unwrap(), 4);
}
