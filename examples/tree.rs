//! A tree of millions of nodes, each its own allocation, built between short-lived
//! allocations of other sizes (as a real program builds its data structures), then walked.
//!
//! The same generic code builds the tree three times, each in a fresh process:
//!
//! - **cohort, zero-size handle**: nodes are `allocator_api2` boxes in lifetime class `Tree`
//!   of a `static` allocator, through a zero-size handle (so a child pointer is one word, as
//!   with `std`'s `Box`); the short-lived garbage lives in class `Temp`. The tree's blocks
//!   hold nothing but nodes, in the order they were built. At the end the tree is not
//!   dropped node by node: `release_class` frees the whole class at once.
//! - **cohort, `ClassHandle` in `scope`**: the same with the safe [`Cohort::scope`] and its
//!   `ClassHandle`, which is two words and is stored in every box: the nodes are twice as big.
//! - **system**: the same boxes on the System allocator (glibc), which is this program's
//!   global allocator. Its nodes land between the garbage and in the holes the garbage left.
//!
//! It prints, per allocator: the node's size, build time, walk time (a full preorder walk,
//! the median of several), the RSS the build added, the time to free the tree and the RSS
//! left afterwards (after `compact` for cohort).
//!
//! Run: `cargo run --release --example tree` (`COHORT_TREE_NODES` changes the node count,
//! 2,000,000 by default).
#![deny(unsafe_op_in_unsafe_fn)]

#[macro_use]
mod common;

use allocator_api2::alloc::{Allocator, Global};
use allocator_api2::boxed::Box;
use allocator_api2::vec::Vec as AVec;
use cohort::{Cohort, StaticHandle};
use common::{child_role, env_number, median};
use std::alloc::System;
use std::time::Instant;
use test_support::{rss, run_child, ByteSize, Rng};

#[global_allocator]
static GLOBAL: System = System;

cohort::lifetime_classes! {
    /// The tree, and the short-lived allocations made while it is built.
    enum Life { Tree, Temp }
}

/// The allocator of the zero-size-handle run (the `scope` run makes its own).
static COHORT: Cohort<Life> = Cohort::new();

cohort::static_class! {
    /// Lifetime class `Tree` of [`COHORT`].
    TreeLife = COHORT, Life::Tree
}
/// A zero-size handle to lifetime class `Tree` of [`COHORT`]: a box of it is one pointer.
type TreeClass = StaticHandle<TreeLife>;

/// Full walks timed; the median is shown.
const WALKS: usize = 7;
/// Short-lived allocations alive at any time while the tree is built; each node's
/// construction replaces one at random.
const LIVE_GARBAGE: usize = 4096;

/// An AST-like node: a kind, a value, the first child and the next sibling.
struct Node<A: Allocator> {
    kind: u32,
    value: u64,
    first_child: Option<Box<Node<A>, A>>,
    next_sibling: Option<Box<Node<A>, A>>,
}

/// Short-lived allocations of 16 to 256 bytes, each replacing a random older one.
struct Garbage<G: Allocator + Copy> {
    live: Vec<AVec<u8, G>>,
    alloc: G,
}

impl<G: Allocator + Copy> Garbage<G> {
    fn new(alloc: G) -> Self {
        Garbage {
            live: Vec::with_capacity(LIVE_GARBAGE),
            alloc,
        }
    }

    /// One more short-lived allocation, written (as a scratch string would be).
    fn churn(&mut self, rng: &mut Rng) {
        let n = rng.range(16, 256);
        let mut v = AVec::with_capacity_in(n, self.alloc);
        v.resize(n, n as u8);
        if self.live.len() < LIVE_GARBAGE {
            self.live.push(v);
        } else {
            let i = rng.range(0, LIVE_GARBAGE - 1);
            self.live[i] = v;
        }
    }
}

/// Builds a tree of exactly `nodes` nodes in preorder (a node, then its children's
/// subtrees), making one short-lived allocation per node.
fn build<A: Allocator + Copy, G: Allocator + Copy>(
    nodes: usize,
    rng: &mut Rng,
    alloc: A,
    garbage: &mut Garbage<G>,
) -> Box<Node<A>, A> {
    let mut node = Box::new_in(
        Node {
            kind: rng.range(0, 15) as u32,
            value: rng.next_u64() >> 8,
            first_child: None,
            next_sibling: None,
        },
        alloc,
    );
    garbage.churn(rng);
    // The other nodes go to 1 to 4 children, in roughly equal shares (a shallow tree).
    let mut rest = nodes - 1;
    let children = if rest == 0 {
        0
    } else {
        rng.range(1, rest.min(4))
    };
    let mut tail = &mut node.first_child;
    for i in 0..children {
        let left = children - i;
        let share = rest / left;
        let part = if left == 1 {
            rest
        } else {
            rng.range(share.div_ceil(2), share + share / 2)
                .clamp(1, rest - (left - 1))
        };
        rest -= part;
        let child = tail.insert(build(part, rng, alloc, garbage));
        tail = &mut child.next_sibling;
    }
    node
}

/// A full preorder walk: the sum of the values, weighted by kind.
fn walk<A: Allocator>(node: &Node<A>) -> u64 {
    let mut sum = node.value.wrapping_mul(u64::from(node.kind) + 1);
    let mut child = node.first_child.as_deref();
    while let Some(c) = child {
        sum = sum.wrapping_add(walk(c));
        child = c.next_sibling.as_deref();
    }
    sum
}

/// What one allocator did.
struct Measured {
    build_ns: f64,
    walk_ns: f64,
    rss_built: usize,
    checksum: u64,
}

/// Builds the tree with `alloc` between garbage from `temp`, then walks it; returns the
/// figures and the tree (the garbage is freed).
fn build_and_walk<A: Allocator + Copy, G: Allocator + Copy>(
    nodes: usize,
    alloc: A,
    temp: G,
) -> (Measured, Box<Node<A>, A>) {
    let mut rng = Rng::new(0x7ee5_eed5);
    let mut garbage = Garbage::new(temp);
    let before = rss();
    let t = Instant::now();
    let root = build(nodes, &mut rng, alloc, &mut garbage);
    let build_ns = t.elapsed().as_nanos() as f64 / nodes as f64;
    let rss_built = rss().saturating_sub(before);
    drop(garbage);
    let mut checksum = 0;
    let times = (0..WALKS)
        .map(|_| {
            let t = Instant::now();
            checksum = std::hint::black_box(walk(&root));
            t.elapsed().as_nanos() as f64 / nodes as f64
        })
        .collect();
    let m = Measured {
        build_ns,
        walk_ns: median(times),
        rss_built,
        checksum,
    };
    (m, root)
}

/// Child process: one allocator, one line of figures.
fn child(role: &str, nodes: usize) {
    let (m, node_size, free_ns, rss_after) = match role {
        "cohort-zst" => {
            let (m, root) = build_and_walk(nodes, TreeClass::new(), COHORT.handle(Life::Temp));
            // Not dropped node by node: released with the class below.
            std::mem::forget(root);
            let t = Instant::now();
            // SAFETY: the tree was the only allocation of class Tree; it was forgotten, so
            // nothing refers to its nodes and nothing frees them; no other thread exists.
            let released = unsafe { COHORT.release_class(Life::Tree) };
            let free_ns = t.elapsed().as_nanos() as f64;
            assert_eq!(released.slots, nodes, "every node released");
            assert!(COHORT.is_empty(), "{}", COHORT.stats());
            COHORT.compact();
            (m, size_of::<Node<TreeClass>>(), free_ns, rss())
        }
        "cohort-scope" => {
            let mut cohort: Cohort<Life> = Cohort::new();
            let (m, freeing) = cohort.scope_exclusive(Life::Tree, |cohort, tree| {
                let (m, root) = build_and_walk(nodes, tree, cohort.handle(Life::Temp));
                // Not dropped node by node: the scope releases the class when this
                // closure returns.
                std::mem::forget(root);
                (m, Instant::now())
            });
            let free_ns = freeing.elapsed().as_nanos() as f64;
            assert!(cohort.is_empty(), "{}", cohort.stats());
            cohort.compact();
            (
                m,
                size_of::<Node<cohort::ClassHandle<Life>>>(),
                free_ns,
                rss(),
            )
        }
        _ => {
            let (m, root) = build_and_walk(nodes, Global, Global);
            let t = Instant::now();
            drop(root);
            let free_ns = t.elapsed().as_nanos() as f64;
            (m, size_of::<Node<Global>>(), free_ns, rss())
        }
    };
    println!(
        "{node_size} {} {} {} {} {} {}",
        m.build_ns, m.walk_ns, m.rss_built, free_ns, rss_after, m.checksum
    );
}

fn main() {
    let nodes = env_number("COHORT_TREE_NODES", 2_000_000);
    if let Some(role) = child_role() {
        child(&role, nodes);
        return;
    }
    println!(
        "A tree of {nodes} nodes, each its own allocation, built in preorder with one \
         short-lived allocation (16-256 B, {LIVE_GARBAGE} alive) per node; walk = median \
         of {WALKS} full preorder walks. Each row runs in a fresh process."
    );
    println!(
        "{:<26} {:>6} {:>10} {:>10} {:>12} {:>9} {:>10} {:>11}",
        "allocator", "node", "build", "walk", "RSS built", "RSS/node", "free", "RSS after"
    );
    let mut checksums = Vec::new();
    for (role, label) in [
        ("cohort-zst", "cohort, zero-size handle"),
        ("cohort-scope", "cohort, ClassHandle/scope"),
        ("system", "system (glibc)"),
    ] {
        let out = run_child(&[role]);
        let f: Vec<f64> = out
            .split_whitespace()
            .map(|x| x.parse().expect("a number"))
            .collect();
        let [node_size, build_ns, walk_ns, rss_built, free_ns, rss_after, checksum] = f[..] else {
            panic!("child `{role}` printed {out:?}");
        };
        checksums.push(checksum);
        println!(
            "{label:<26} {:>4} B {:>5.1} ns/n {:>5.2} ns/n {:>12} {:>7.1} B {:>7.2} ms {:>11}",
            node_size,
            build_ns,
            walk_ns,
            ByteSize::from(rss_built as usize),
            rss_built / nodes as f64,
            free_ns / 1e6,
            ByteSize::from(rss_after as usize),
        );
    }
    assert!(
        checksums.windows(2).all(|w| w[0] == w[1]),
        "both trees must be the same: {checksums:?}"
    );
    println!("(both trees walk to the same checksum; ns/n = nanoseconds per node)");
}
