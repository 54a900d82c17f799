//! Opening a region whose header is valid but whose instance state (the pool, registry,
//! lists, unit states and heaps between the header and the first block) is damaged: a
//! flipped bit on disk, a stray write into the file. The template was left by its last
//! process, so its state is sealed: an input that changes any byte of it must be refused
//! with `RegionError::StateDamaged` (RED-18: before the seal, verify and compact followed
//! damaged lists to wild addresses); one that changes nothing must open and work
//! (allocate, free, walk, release, compact, leave), never crash, hang, or hand out one
//! slot twice.
//!
//! A valid region's file (made once per process, with allocations of several sizes and
//! classes live and some freed, so its lists and heaps are not empty) is patched with the
//! input's (offset, byte) pairs. The first input byte picks where the offsets fall: the
//! first 16 KiB of the state (the pool's shared state, the registry and the lists: every
//! word an opener follows), or anywhere in the state area. `COHORT_FUZZ_SKIP=state-verify`
//! leaves `verify` out (RED-18's crash is there), to find what else a damaged state does.
#![no_main]

use cohort::{CreateOptions, OpenOptions, Place, RegionError, SharedCohort};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

cohort::lifetime_classes! {
    enum Life { A, B }
}

/// Where the state starts in a region file (the header's page).
const STATE_OFFSET: usize = 4096;
/// The header word that holds the state's length.
const W_STATE_LEN: usize = 11;

/// The sizes the template and each input allocate.
const SIZES: [usize; 6] = [1, 8, 64, 200, 1000, 8000];

/// A file of a region in use: its bytes, where its blocks start and its pages that are not
/// zero, made once.
fn valid_region() -> &'static (Vec<u8>, usize, Vec<usize>) {
    static BYTES: OnceLock<(Vec<u8>, usize, Vec<usize>)> = OnceLock::new();
    BYTES.get_or_init(|| {
        let path = scratch("template");
        let _ = std::fs::remove_file(&path);
        // The smallest region that holds the state and a few blocks: each input copies it.
        let least = match SharedCohort::<Life>::create(Place::File(&path), CreateOptions::new(1)) {
            Err(RegionError::Capacity {
                minimum: Some(m), ..
            }) => m,
            other => panic!("the least capacity: {other:?}"),
        };
        let region = SharedCohort::<Life>::create(
            Place::File(&path),
            CreateOptions::new(least + (40 << 20)),
        )
        .expect("a region for the template");
        let mut first_block = usize::MAX;
        for i in 0..600 {
            let size = SIZES[i % SIZES.len()];
            let life = if i % 3 == 0 { Life::B } else { Life::A };
            let p = region.malloc(size, life);
            assert!(!p.is_null());
            let off = region.offset_of(p).expect("in the region").get() as usize;
            first_block = first_block.min(off & !((2 << 20) - 1));
            if i % 4 == 0 {
                // SAFETY: allocated above, freed once.
                unsafe { region.free(p, size, life) };
            }
        }
        let root = region.new_in(7u64, Life::B).expect("a root");
        region.set_root(0, Some(root));
        region.leave().expect("written");
        let bytes = std::fs::read(&path).expect("the template");
        std::fs::remove_file(&path).expect("removed");
        let pages = nonzero_pages(&bytes);
        (bytes, first_block, pages)
    })
}

/// Writes `bytes` as the file `path`: only `pages` (the others are zero: holes).
fn write_pages(path: &std::path::Path, bytes: &[u8], pages: impl Iterator<Item = usize>) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::create(path).expect("the input's file");
    file.set_len(bytes.len() as u64).expect("sized");
    for i in pages {
        let page = &bytes[i * 4096..(i + 1) * 4096];
        file.write_all_at(page, (i * 4096) as u64).expect("written");
    }
}

/// The pages of `bytes` that are not all zero.
fn nonzero_pages(bytes: &[u8]) -> Vec<usize> {
    let pages = bytes.chunks(4096).enumerate();
    pages
        .filter(|(_, p)| p.iter().any(|&b| b != 0))
        .map(|(i, _)| i)
        .collect()
}

/// A scratch file of this target, unique to this process.
fn scratch(tag: &str) -> PathBuf {
    cohort_fuzz::scratch_file(&format!("state-{tag}"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (template, blocks, pages) = valid_region();
    let span = if mode & 1 == 0 {
        16 << 10
    } else {
        blocks - STATE_OFFSET
    };
    let mut file = template.clone();
    let mut patched = Vec::new();
    for patch in rest.chunks_exact(4) {
        let at =
            STATE_OFFSET + u32::from_le_bytes([patch[0], patch[1], patch[2], 0]) as usize % span;
        file[at] = patch[3];
        patched.push(at / 4096);
    }
    let path = scratch("input");
    write_pages(&path, &file, pages.iter().copied().chain(patched));
    let opened = SharedCohort::<Life>::open(
        Place::File(&path),
        OpenOptions::new().timeout(Duration::ZERO),
    );
    // The template was left by its last process: its state is sealed, and a state that
    // differs from it in any byte is refused. (Bytes past the state, in the middle seal
    // page and up to the first block, are not the state.)
    let state_len = u64::from_le_bytes(template[W_STATE_LEN * 8..][..8].try_into().unwrap());
    let state = STATE_OFFSET..STATE_OFFSET + state_len as usize;
    if file[state.clone()] != template[state] {
        match opened {
            Err(RegionError::StateDamaged { .. }) => {}
            Err(e) => panic!("a damaged state refused for another reason: {e}"),
            Ok(_) => panic!("a damaged state opened"),
        }
        std::fs::remove_file(&path).expect("removed");
        return;
    }
    if let Ok(region) = opened {
        let mut live = Vec::new();
        for (i, &size) in SIZES.iter().cycle().take(60).enumerate() {
            let life = if i % 2 == 0 { Life::A } else { Life::B };
            let p = region.malloc(size, life);
            if !p.is_null() {
                // SAFETY: fresh, `size` bytes.
                unsafe { p.write_bytes(i as u8, size) };
                live.push((p, size, life, i as u8));
            }
        }
        for &(p, size, _, tag) in &live {
            // SAFETY: live, `size` bytes.
            let bytes = unsafe { std::slice::from_raw_parts(p, size) };
            assert!(bytes.iter().all(|&b| b == tag), "a slot handed out twice");
        }
        for (p, size, life, _) in live {
            // SAFETY: allocated above, freed once.
            unsafe { region.free(p, size, life) };
        }
        let _ = region.stats();
        if !cohort_fuzz::skip("state-verify") {
            // SAFETY: this process is the region's only user.
            let _ = unsafe { region.verify() };
        }
        // SAFETY: nothing of class A made by this process is used after.
        let _ = unsafe { region.release_class(Life::A) };
        let _ = region.compact();
        let _ = region.is_empty();
        region.leave().expect("left");
    }
    std::fs::remove_file(&path).expect("removed");
});
