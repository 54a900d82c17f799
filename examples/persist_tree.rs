//! A binary search tree kept in a file: one process builds it, a later one finds it through
//! a root slot, walks it in order at whatever address its mapping landed, and frees it.
//!
//! ```sh
//! cargo run --release --example persist_tree                    # build, then walk in a new process
//! cargo run --release --example persist_tree -- build FILE N    # add N random keys to FILE's tree
//! cargo run --release --example persist_tree -- walk FILE       # print its size, check its order
//! cargo run --release --example persist_tree -- free FILE       # free every node, delete FILE
//! ```
//!
//! Nodes refer to each other by [`Off`], their offset in the region, never by pointer: the
//! region maps at another address in every process. The tree's nodes have a lifetime
//! class of their own, so they lie densely in their own blocks.

use cohort::{CreateOptions, Off, OpenOptions, Place, SharedCohort};
use std::path::Path;

cohort::lifetime_classes! {
    enum Life { Scratch, Tree }
}

/// A node: a key and two links, 24 bytes.
struct Node {
    key: u64,
    left: Option<Off<Node>>,
    right: Option<Off<Node>>,
}

/// The root slot the tree hangs from.
const TREE: usize = 0;

fn open_or_create(file: &Path) -> SharedCohort<Life> {
    match SharedCohort::open(Place::File(file), OpenOptions::new()) {
        Ok(region) => region,
        Err(cohort::RegionError::NotFound { .. }) => {
            SharedCohort::create(Place::File(file), CreateOptions::new(256 << 20))
                .expect("a new region")
        }
        Err(e) => panic!("{}: {e}", file.display()),
    }
}

/// Inserts `key` (a key already there is left alone); false when memory is exhausted.
fn insert(region: &SharedCohort<Life>, key: u64) -> bool {
    let node = Node {
        key,
        left: None,
        right: None,
    };
    let Some(mut at) = region.root::<Node>(TREE) else {
        let Some(new) = region.new_in(node, Life::Tree) else {
            return false;
        };
        region.set_root(TREE, Some(new));
        return true;
    };
    loop {
        // SAFETY: every link of the tree names a live node; this process alone changes it.
        let here = unsafe { region.get_mut(at) };
        let next = match key.cmp(&here.key) {
            std::cmp::Ordering::Equal => return true,
            std::cmp::Ordering::Less => &mut here.left,
            std::cmp::Ordering::Greater => &mut here.right,
        };
        match *next {
            Some(child) => at = child,
            None => {
                *next = region.new_in(node, Life::Tree);
                return next.is_some();
            }
        }
    }
}

/// Calls `f` on every node in key order (with an explicit stack: trees of random keys
/// are shallow, but a sorted insertion order makes a list).
fn in_order(region: &SharedCohort<Life>, mut f: impl FnMut(Off<Node>, &Node)) {
    let mut stack = Vec::new();
    let mut at = region.root::<Node>(TREE);
    while at.is_some() || !stack.is_empty() {
        while let Some(off) = at {
            stack.push(off);
            // SAFETY: every link of the tree names a live node.
            at = unsafe { region.get(off) }.left;
        }
        let off = stack.pop().expect("not empty");
        // SAFETY: as above.
        let node = unsafe { region.get(off) };
        f(off, node);
        at = node.right;
    }
}

fn build(file: &Path, n: u64) {
    let region = open_or_create(file);
    let mut seed = 0x2545_F491_4F6C_DD1D ^ n;
    for _ in 0..n {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        assert!(insert(&region, seed % 1_000_000_000), "out of memory");
    }
    let nodes = region.stats().small.live;
    println!(
        "build: {nodes} nodes in {} ({} bytes mapped)",
        file.display(),
        region.capacity()
    );
    region.leave().expect("written to disk");
}

fn walk(file: &Path) {
    let region = open_or_create(file);
    let (mut count, mut last) = (0u64, None);
    in_order(&region, |_, node| {
        assert!(last < Some(node.key), "in order");
        last = Some(node.key);
        count += 1;
    });
    println!("walk: {count} keys in order, the largest {last:?}");
}

fn free(file: &Path) {
    let region = open_or_create(file);
    let mut nodes = Vec::new();
    in_order(&region, |off, _| nodes.push(off));
    region.set_root::<Node>(TREE, None);
    for off in &nodes {
        // SAFETY: each node was allocated by new_in in class Tree and is freed once; the
        // tree is unreachable from the root now.
        unsafe { region.free_in(*off, Life::Tree) };
    }
    println!(
        "free: {} nodes freed, region empty: {}",
        nodes.len(),
        region.is_empty()
    );
    region.destroy().expect("deleted");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["build", file, n] => build(Path::new(file), n.parse().expect("a count")),
        ["walk", file] => walk(Path::new(file)),
        ["free", file] => free(Path::new(file)),
        [] => {
            // Each step in a process of its own: the tree outlives the one that built it.
            let file = std::env::temp_dir().join(format!("cohort-tree-{}", std::process::id()));
            let file = file.to_str().expect("a UTF-8 temporary path");
            let me = std::env::current_exe().expect("this program");
            for step in [
                &["build", file, "200000"][..],
                &["walk", file],
                &["free", file],
            ] {
                let ok = std::process::Command::new(&me)
                    .args(step)
                    .status()
                    .expect("run");
                assert!(ok.success(), "{step:?} failed");
            }
        }
        _ => {
            eprintln!("usage: persist_tree [build FILE N | walk FILE | free FILE]");
            std::process::exit(2);
        }
    }
}
