//! A request loop: each request's data lives in lifetime class `Request` and is released at
//! once when the request ends; a long-lived cache in class `Long` grows slowly beside it.
//!
//! Each request parses a generated HTTP-like request (a path, a query, 8 to 24 headers, a
//! body of 1 to 12 KiB) into `allocator_api2` vectors and a `hashbrown` map on a
//! `ClassHandle`, counts the body's words, and builds a response. It is not dropped piece by
//! piece: `release_class(Request)` frees it all at the end. Every 100th request copies its
//! response into the cache (class `Long`).
//!
//! The same loop runs twice, each in a fresh process: with cohort, and with the System
//! allocator (glibc; the request's data is dropped). It prints the RSS every 2,000 requests
//! for both, then cohort's `stats()` with the cache alive, and `is_empty()` after tearing
//! everything down.
//!
//! Run: `cargo run --release --example requests` (`COHORT_REQUESTS` changes the number of
//! requests, 20,000 by default).
#![deny(unsafe_op_in_unsafe_fn)]

mod common;

use allocator_api2::alloc::{Allocator, Global};
use allocator_api2::vec::Vec as AVec;
use cohort::{ClassHandle, Cohort};
use common::{child_role, env_number};
use std::alloc::System;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use test_support::{rss, run_child, ByteSize, Rng};

#[global_allocator]
static GLOBAL: System = System;

cohort::lifetime_classes! {
    /// A request's data, and what outlives requests.
    enum Life { Request, Long }
}

static COHORT: Cohort<Life> = Cohort::new();

/// RSS is printed after every this many requests.
const REPORT_EVERY: usize = 2_000;
/// Every this many requests, one response is cached.
const CACHE_EVERY: usize = 100;

type Hasher = BuildHasherDefault<DefaultHasher>;
type Map<K, V, A> = hashbrown::HashMap<K, V, Hasher, A>;
type Bytes<A> = AVec<u8, A>;

/// Where requests and the cache allocate, and how a request's data ends.
trait Memory {
    type Request: Allocator + Copy;
    type Long: Allocator + Copy;
    fn request() -> Self::Request;
    fn long() -> Self::Long;
    /// Ends a request: frees `data` and every other allocation of class `Request`.
    ///
    /// # Safety
    /// `data` owns every live allocation of class `Request`, and nothing refers into it.
    unsafe fn end_request<T>(data: T);
}

/// cohort: the request's class is released at once.
struct CohortMemory;

impl Memory for CohortMemory {
    type Request = ClassHandle<'static, Life>;
    type Long = ClassHandle<'static, Life>;
    fn request() -> Self::Request {
        COHORT.handle(Life::Request)
    }
    fn long() -> Self::Long {
        COHORT.handle(Life::Long)
    }
    unsafe fn end_request<T>(data: T) {
        // Not dropped piece by piece: released with its class.
        std::mem::forget(data);
        // SAFETY: `data` owned every live allocation of class Request (the caller's
        // contract) and was forgotten, so nothing uses or frees them; one thread.
        let released = unsafe { COHORT.release_class(Life::Request) };
        debug_assert_eq!(released.left_to_other_threads, 0);
    }
}

/// The System allocator; the request's data is dropped.
struct SystemMemory;

impl Memory for SystemMemory {
    type Request = Global;
    type Long = Global;
    fn request() -> Global {
        Global
    }
    fn long() -> Global {
        Global
    }
    unsafe fn end_request<T>(data: T) {
        drop(data);
    }
}

/// A parsed request and its response: everything a request allocates. Only the response
/// and path are read afterwards; the rest is owned so that it ends with the request.
#[allow(dead_code)]
struct Request<A: Allocator + Copy> {
    raw: Bytes<A>,
    path: Bytes<A>,
    query: AVec<(Bytes<A>, Bytes<A>), A>,
    headers: Map<Bytes<A>, Bytes<A>, A>,
    body: Bytes<A>,
    words: AVec<u32, A>,
    response: Bytes<A>,
}

fn copy_in<A: Allocator + Copy>(bytes: &[u8], alloc: A) -> Bytes<A> {
    let mut v = AVec::with_capacity_in(bytes.len(), alloc);
    v.extend_from_slice(bytes);
    v
}

/// Appends formatted text (`allocator_api2`'s vector has no `io::Write` without `std`).
fn put<A: Allocator>(out: &mut Bytes<A>, args: fmt::Arguments<'_>) {
    struct Out<'a, A: Allocator>(&'a mut Bytes<A>);
    impl<A: Allocator> fmt::Write for Out<'_, A> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.0.extend_from_slice(s.as_bytes());
            Ok(())
        }
    }
    fmt::write(&mut Out(out), args).expect("formatting into memory");
}

/// Writes request number `id`'s text into `raw` (the bytes a socket would deliver).
fn generate<A: Allocator>(id: usize, rng: &mut Rng, raw: &mut Bytes<A>) {
    let user = rng.range(0, 999);
    put(
        raw,
        format_args!("GET /users/{user}/items?page={}&sort=name", id % 7),
    );
    raw.extend_from_slice(b" HTTP/1.1\r\n");
    for h in 0..rng.range(8, 24) {
        let len = rng.range(8, 64);
        put(raw, format_args!("x-header-{h}: "));
        raw.extend((0..len).map(|i| b'a' + ((i * 7 + h) % 26) as u8));
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"\r\n");
    for _ in 0..rng.range(1024, 12 * 1024) / 8 {
        let word = [b"alpha ", b"gamma ", b"delta ", b"omega "][rng.range(0, 3)];
        raw.extend_from_slice(&word[..rng.range(3, 6)]);
        raw.extend_from_slice(b"  ");
    }
}

/// Parses and answers one request; all its data is in `alloc`.
fn handle<A: Allocator + Copy>(id: usize, rng: &mut Rng, alloc: A) -> Request<A> {
    let mut raw = AVec::with_capacity_in(256, alloc);
    generate(id, rng, &mut raw);
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let mut lines = raw[..head_end].split(|&c| c == b'\n');
    let first = lines.next().expect("request line");
    let target = first.split(|&c| c == b' ').nth(1).expect("target");
    let (path, query_text) = match target.iter().position(|&c| c == b'?') {
        Some(q) => (&target[..q], &target[q + 1..]),
        None => (target, &b""[..]),
    };
    let mut query = AVec::new_in(alloc);
    for pair in query_text.split(|&c| c == b'&').filter(|p| !p.is_empty()) {
        let eq = pair.iter().position(|&c| c == b'=').unwrap_or(pair.len());
        let value = pair.get(eq + 1..).unwrap_or(b"");
        query.push((copy_in(&pair[..eq], alloc), copy_in(value, alloc)));
    }
    let mut headers = Map::with_hasher_in(Hasher::default(), alloc);
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(colon) = line.iter().position(|&c| c == b':') {
            let value = line[colon + 1..].trim_ascii_start();
            headers.insert(copy_in(&line[..colon], alloc), copy_in(value, alloc));
        }
    }
    let body = copy_in(&raw[head_end + 4..], alloc);
    let mut words = AVec::new_in(alloc);
    let mut in_word = false;
    for (i, &c) in body.iter().enumerate() {
        if c != b' ' && !in_word {
            words.push(i as u32);
        }
        in_word = c != b' ';
    }
    let mut response = AVec::with_capacity_in(128, alloc);
    put(
        &mut response,
        format_args!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n{} {} words, {} headers, {} bytes, \
         query {}\n",
        String::from_utf8_lossy(path),
        words.len(),
        headers.len(),
        body.len(),
        query.len()
        ),
    );
    Request {
        path: copy_in(path, alloc),
        raw,
        query,
        headers,
        body,
        words,
        response,
    }
}

/// Child process: the loop on one allocator. Prints `requests <tab> rss <tab> cache
/// entries` every [`REPORT_EVERY`] requests, then (cohort) the stats and the teardown.
fn child<M: Memory>(requests: usize) {
    let mut rng = Rng::new(0x5e55_1011);
    let mut cache: Map<u64, Bytes<M::Long>, M::Long> =
        Map::with_hasher_in(Hasher::default(), M::long());
    let mut checksum = 0u64;
    println!("0\t{}\t0", rss());
    let start = std::time::Instant::now();
    for id in 1..=requests {
        let req = handle(id, &mut rng, M::request());
        checksum = checksum.wrapping_add(Hasher::default().hash_one(&req.response[..]));
        if id % CACHE_EVERY == 0 {
            let key = Hasher::default().hash_one((&req.path[..], id));
            cache.insert(key, copy_in(&req.response, M::long()));
        }
        // SAFETY: `req` owns every allocation of class Request: `handle` freed its
        // temporaries, and the cache copied what it keeps.
        unsafe { M::end_request(req) };
        if id % REPORT_EVERY == 0 {
            println!("{id}\t{}\t{}", rss(), cache.len());
        }
    }
    let per_request = start.elapsed().as_nanos() / requests as u128;
    println!("checksum {checksum}");
    println!("{per_request}");
    if std::any::type_name::<M>().ends_with("CohortMemory") {
        println!("stats with the cache alive:\n{}", COHORT.stats());
        drop(cache);
        println!(
            "after dropping the cache: is_empty() = {}",
            COHORT.is_empty()
        );
    }
}

fn main() {
    let requests = env_number("COHORT_REQUESTS", 20_000);
    match child_role().as_deref() {
        Some("cohort") => return child::<CohortMemory>(requests),
        Some(_) => return child::<SystemMemory>(requests),
        None => {}
    }
    let cohort = run_child(&["cohort"]);
    let system = run_child(&["system"]);
    let rows = |out: &str| -> Vec<(usize, usize, usize)> {
        out.lines()
            .map_while(|l| {
                let f: Vec<usize> = l.split('\t').map_while(|x| x.parse().ok()).collect();
                (f.len() == 3).then(|| (f[0], f[1], f[2]))
            })
            .collect()
    };
    let checksum = |out: &str| {
        out.lines()
            .find(|l| l.starts_with("checksum"))
            .map(str::to_string)
    };
    assert_eq!(
        checksum(&cohort),
        checksum(&system),
        "both loops answer the same"
    );
    println!(
        "{requests} requests, each parsed into its own data (8-24 headers, a 1-12 KiB \
         body); every {CACHE_EVERY}th response cached. RSS, each loop in a fresh process:"
    );
    println!(
        "{:>9} {:>12} {:>12} {:>14}",
        "requests", "cohort", "system", "cache entries"
    );
    for ((n, c, entries), (_, s, _)) in rows(&cohort).into_iter().zip(rows(&system)) {
        println!(
            "{n:>9} {:>12} {:>12} {entries:>14}",
            ByteSize::from(c),
            ByteSize::from(s)
        );
    }
    let after_checksum = |out: &str| -> Vec<String> {
        out.lines()
            .skip_while(|l| !l.starts_with("checksum"))
            .skip(1)
            .map(str::to_string)
            .collect()
    };
    let (c, s) = (after_checksum(&cohort), after_checksum(&system));
    println!(
        "time per request (parse, answer, end): cohort {} us, system {} us \
         (wall clock, including RSS reports)",
        c[0].parse::<f64>().unwrap() / 1e3,
        s[0].parse::<f64>().unwrap() / 1e3
    );
    for line in &c[1..] {
        println!("{line}");
    }
}
