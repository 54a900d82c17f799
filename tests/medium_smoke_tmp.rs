use cohort::Cohort;
#[test]
fn smoke() {
    let a = Cohort::<()>::new();
    let mut ps = Vec::new();
    for i in 0..200usize {
        let size = 16385 + (i * 7919) % ((1 << 20) - 16384);
        let p = a.malloc(size, ());
        assert!(!p.is_null());
        assert_eq!(p as usize % 4096, 0);
        unsafe { p.write_bytes(i as u8, size) };
        ps.push((p, size, i as u8));
    }
    let s = a.stats();
    println!("{s}");
    assert_eq!(s.medium_allocations, 200);
    a.verify_exclusive_check();
    for (p, size, b) in ps {
        unsafe { assert_eq!(*p.add(size - 1), b); a.free(p, size, ()) };
    }
    assert!(a.is_empty());
    println!("{}", a.stats());
}
trait V { fn verify_exclusive_check(&self); }
impl V for Cohort<()> { fn verify_exclusive_check(&self) { println!("{}", unsafe { self.verify() }.unwrap()); } }
