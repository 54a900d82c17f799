//! A compiler-like pipeline whose phases each build their data in one lifetime class, and
//! whose memory goes back to the OS as each phase ends.
//!
//! 1. **parse** a generated program (functions of `let` statements over arithmetic
//!    expressions) into a syntax tree: a box per binary expression, a string per name, in
//!    lifetime class `Parse`;
//! 2. **lower** the tree into three-address IR (a vector of instructions per function) in
//!    class `Lower`; then the whole `Parse` class is released at once;
//! 3. **optimise** the IR (constant folding, copy propagation, dead-code elimination) into
//!    class `Opt`; then `Lower` is released;
//! 4. **emit** assembly-like text (on the global allocator); then `Opt` is released.
//!
//! The same generic pipeline runs twice, each in a fresh process: with cohort (a zero-size
//! `allocator_api2` handle per class of a `static` allocator; a phase ends with
//! `release_class`) and with the System allocator (glibc; a phase ends by dropping its
//! data). It prints the RSS after each phase and each release for both, side by side:
//! cohort's falls as phases end, glibc's keeps what the phases used.
//!
//! Run: `cargo run --release --example compiler` (`COHORT_COMPILER_FUNCS` changes the number
//! of functions, 8,000 by default).
#![deny(unsafe_op_in_unsafe_fn)]

#[macro_use]
mod common;

use allocator_api2::alloc::{Allocator, Global};
use allocator_api2::boxed::Box;
use allocator_api2::vec::Vec as AVec;
use cohort::{Cohort, StaticHandle};
use common::{child_role, env_number};
use std::alloc::System;
use std::fmt::Write;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use test_support::{rss, run_child, ByteSize, Rng};

#[global_allocator]
static GLOBAL: System = System;

cohort::lifetime_classes! {
    /// One lifetime class per compiler phase.
    enum Phase { Parse, Lower, Opt }
}

static COHORT: Cohort<Phase> = Cohort::new();

cohort::static_class! {
    /// Lifetime class `Parse` of [`COHORT`].
    ParseLife = COHORT, Phase::Parse
}
/// A zero-size handle to lifetime class `Parse` of [`COHORT`].
type ParseClass = StaticHandle<ParseLife>;
cohort::static_class! {
    /// Lifetime class `Lower` of [`COHORT`].
    LowerLife = COHORT, Phase::Lower
}
/// A zero-size handle to lifetime class `Lower` of [`COHORT`].
type LowerClass = StaticHandle<LowerLife>;
cohort::static_class! {
    /// Lifetime class `Opt` of [`COHORT`].
    OptLife = COHORT, Phase::Opt
}
/// A zero-size handle to lifetime class `Opt` of [`COHORT`].
type OptClass = StaticHandle<OptLife>;

/// Where each phase allocates, and how a phase's data ends.
trait Allocators {
    type Parse: Allocator + Copy + Default;
    type Lower: Allocator + Copy + Default;
    type Opt: Allocator + Copy + Default;

    /// Ends a phase: frees `data` and every other allocation of `phase`; returns a note
    /// for the report.
    ///
    /// # Safety
    /// `data` owns every live allocation of `phase`, and nothing refers into it.
    unsafe fn end<T>(data: T, phase: Phase) -> String;
}

/// cohort: a class per phase, released as a whole.
struct CohortPhases;

impl Allocators for CohortPhases {
    type Parse = ParseClass;
    type Lower = LowerClass;
    type Opt = OptClass;

    unsafe fn end<T>(data: T, phase: Phase) -> String {
        // Not dropped object by object: released with its class.
        std::mem::forget(data);
        // SAFETY: `data` owned every live allocation of the class (the caller's contract)
        // and was forgotten, so nothing uses or frees them; this program has one thread.
        let r = unsafe { COHORT.release_class(phase) };
        format!(
            "released {phase:?}: {} allocations in {} blocks",
            r.slots, r.blocks
        )
    }
}

/// The System allocator for every phase; a phase's data is dropped.
struct PlainPhases;

impl Allocators for PlainPhases {
    type Parse = Global;
    type Lower = Global;
    type Opt = Global;

    unsafe fn end<T>(data: T, _: Phase) -> String {
        drop(data);
        String::new()
    }
}

// ---- the language ----------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Add,
    Sub,
    Mul,
}

impl Op {
    fn apply(self, a: i64, b: i64) -> i64 {
        match self {
            Op::Add => a.wrapping_add(b),
            Op::Sub => a.wrapping_sub(b),
            Op::Mul => a.wrapping_mul(b),
        }
    }

    fn symbol(self) -> char {
        match self {
            Op::Add => '+',
            Op::Sub => '-',
            Op::Mul => '*',
        }
    }

    fn mnemonic(self) -> &'static str {
        match self {
            Op::Add => "add",
            Op::Sub => "sub",
            Op::Mul => "mul",
        }
    }
}

/// Generates the program's source: `funcs` functions of 20 to 40 `let` statements.
fn generate(funcs: usize) -> String {
    fn expr(rng: &mut Rng, vars: &[String], depth: u32, out: &mut String) {
        if depth == 0 || rng.range(0, 3) == 0 {
            match rng.range(0, 3) {
                0 => write!(out, "{}", rng.range(0, 99)).unwrap(),
                _ => out.push_str(&vars[rng.range(0, vars.len() - 1)]),
            }
            return;
        }
        let op = [Op::Add, Op::Sub, Op::Mul][rng.range(0, 2)];
        out.push('(');
        expr(rng, vars, depth - 1, out);
        write!(out, " {} ", op.symbol()).unwrap();
        expr(rng, vars, depth - 1, out);
        out.push(')');
    }
    let mut rng = Rng::new(0xc0de);
    let mut src = String::new();
    for f in 0..funcs {
        let params = rng.range(1, 4);
        let mut vars: Vec<String> = (0..params).map(|p| format!("arg{p}")).collect();
        writeln!(src, "fn function_{f}({}) {{", vars.join(", ")).unwrap();
        for t in 0..rng.range(20, 40) {
            write!(src, "  let temp_{t} = ").unwrap();
            expr(&mut rng, &vars, 4, &mut src);
            src.push_str(";\n");
            vars.push(format!("temp_{t}"));
        }
        src.push_str("  return ");
        expr(&mut rng, &vars, 2, &mut src);
        src.push_str(";\n}\n");
    }
    src
}

// ---- phase 1: parse ---------------------------------------------------------------------

type Name<A> = AVec<u8, A>;

enum Expr<A: Allocator> {
    Num(i64),
    Var(Name<A>),
    Bin(Op, Box<Expr<A>, A>, Box<Expr<A>, A>),
}

struct Let<A: Allocator> {
    name: Name<A>,
    value: Expr<A>,
}

struct Func<A: Allocator> {
    name: Name<A>,
    params: AVec<Name<A>, A>,
    body: AVec<Let<A>, A>,
    ret: Expr<A>,
}

/// A recursive-descent parser over the source bytes.
struct Parser<'s, A> {
    src: &'s [u8],
    at: usize,
    alloc: A,
}

impl<A: Allocator + Copy> Parser<'_, A> {
    fn skip_space(&mut self) {
        while self.src.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> u8 {
        self.skip_space();
        self.src.get(self.at).copied().unwrap_or(0)
    }

    fn expect(&mut self, text: &str) {
        self.skip_space();
        assert!(
            self.src[self.at..].starts_with(text.as_bytes()),
            "expected {text:?} at byte {}",
            self.at
        );
        self.at += text.len();
    }

    fn name(&mut self) -> Name<A> {
        self.skip_space();
        let start = self.at;
        while self
            .src
            .get(self.at)
            .is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_')
        {
            self.at += 1;
        }
        let mut name = AVec::with_capacity_in(self.at - start, self.alloc);
        name.extend_from_slice(&self.src[start..self.at]);
        name
    }

    /// expr := term (('+' | '-') term)*
    fn expr(&mut self) -> Expr<A> {
        let mut left = self.term();
        loop {
            let op = match self.peek() {
                b'+' => Op::Add,
                b'-' => Op::Sub,
                _ => return left,
            };
            self.at += 1;
            let right = self.term();
            left = Expr::Bin(
                op,
                Box::new_in(left, self.alloc),
                Box::new_in(right, self.alloc),
            );
        }
    }

    /// term := atom ('*' atom)*
    fn term(&mut self) -> Expr<A> {
        let mut left = self.atom();
        while self.peek() == b'*' {
            self.at += 1;
            let right = self.atom();
            left = Expr::Bin(
                Op::Mul,
                Box::new_in(left, self.alloc),
                Box::new_in(right, self.alloc),
            );
        }
        left
    }

    /// atom := number | name | '(' expr ')'
    fn atom(&mut self) -> Expr<A> {
        match self.peek() {
            b'(' => {
                self.at += 1;
                let e = self.expr();
                self.expect(")");
                e
            }
            c if c.is_ascii_digit() => {
                let mut n = 0i64;
                while let Some(d) = self.src.get(self.at).filter(|d| d.is_ascii_digit()) {
                    n = n * 10 + i64::from(d - b'0');
                    self.at += 1;
                }
                Expr::Num(n)
            }
            _ => Expr::Var(self.name()),
        }
    }

    fn func(&mut self) -> Func<A> {
        self.expect("fn");
        let name = self.name();
        self.expect("(");
        let mut params = AVec::new_in(self.alloc);
        while self.peek() != b')' {
            params.push(self.name());
            if self.peek() == b',' {
                self.at += 1;
            }
        }
        self.expect(")");
        self.expect("{");
        let mut body = AVec::new_in(self.alloc);
        while self.peek() == b'l' {
            self.expect("let");
            let name = self.name();
            self.expect("=");
            let value = self.expr();
            self.expect(";");
            body.push(Let { name, value });
        }
        self.expect("return");
        let ret = self.expr();
        self.expect(";");
        self.expect("}");
        Func {
            name,
            params,
            body,
            ret,
        }
    }
}

fn parse<A: Allocator + Copy>(src: &str, alloc: A) -> AVec<Func<A>, A> {
    let mut p = Parser {
        src: src.as_bytes(),
        at: 0,
        alloc,
    };
    let mut funcs = AVec::new_in(alloc);
    while p.peek() != 0 {
        funcs.push(p.func());
    }
    funcs
}

// ---- phase 2: lower ---------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operand {
    Const(i64),
    Param(u32),
    Reg(u32),
}

struct Inst {
    op: Op,
    dst: u32,
    a: Operand,
    b: Operand,
}

struct IrFunc<A: Allocator> {
    name: Name<A>,
    insts: AVec<Inst, A>,
    ret: Operand,
}

type Scope<'a, A> = hashbrown::HashMap<&'a [u8], Operand, BuildHasherDefault<DefaultHasher>, A>;

fn lower_expr<P: Allocator, A: Allocator>(
    e: &Expr<P>,
    scope: &Scope<'_, A>,
    insts: &mut AVec<Inst, A>,
) -> Operand {
    match e {
        Expr::Num(n) => Operand::Const(*n),
        Expr::Var(name) => scope[name.as_slice()],
        Expr::Bin(op, a, b) => {
            let a = lower_expr(a, scope, insts);
            let b = lower_expr(b, scope, insts);
            let dst = insts.len() as u32;
            insts.push(Inst { op: *op, dst, a, b });
            Operand::Reg(dst)
        }
    }
}

fn lower<P: Allocator, A: Allocator + Copy>(
    ast: &AVec<Func<P>, P>,
    alloc: A,
) -> AVec<IrFunc<A>, A> {
    let mut out = AVec::with_capacity_in(ast.len(), alloc);
    for f in ast.iter() {
        let mut scope = Scope::with_hasher_in(BuildHasherDefault::default(), alloc);
        for (i, p) in f.params.iter().enumerate() {
            scope.insert(p.as_slice(), Operand::Param(i as u32));
        }
        let mut insts = AVec::new_in(alloc);
        for l in f.body.iter() {
            let v = lower_expr(&l.value, &scope, &mut insts);
            scope.insert(l.name.as_slice(), v);
        }
        let ret = lower_expr(&f.ret, &scope, &mut insts);
        let mut name = AVec::with_capacity_in(f.name.len(), alloc);
        name.extend_from_slice(&f.name);
        out.push(IrFunc { name, insts, ret });
    }
    out
}

// ---- phase 3: optimise ------------------------------------------------------------------

/// Constant folding and copy propagation, then dead-code elimination, into `alloc`.
fn optimise<L: Allocator, A: Allocator + Copy>(
    ir: &AVec<IrFunc<L>, L>,
    alloc: A,
) -> AVec<IrFunc<A>, A> {
    let mut out = AVec::with_capacity_in(ir.len(), alloc);
    for f in ir.iter() {
        // What each register became: a constant, or itself.
        let mut value = AVec::with_capacity_in(f.insts.len(), alloc);
        let subst = |value: &AVec<Operand, A>, o: Operand| match o {
            Operand::Reg(r) => value[r as usize],
            o => o,
        };
        let mut kept = AVec::new_in(alloc);
        for i in f.insts.iter() {
            let (a, b) = (subst(&value, i.a), subst(&value, i.b));
            let v = match (i.op, a, b) {
                (op, Operand::Const(x), Operand::Const(y)) => Operand::Const(op.apply(x, y)),
                (Op::Add, Operand::Const(0), o) | (Op::Add | Op::Sub, o, Operand::Const(0)) => o,
                (Op::Mul, Operand::Const(1), o) | (Op::Mul, o, Operand::Const(1)) => o,
                (Op::Mul, Operand::Const(0), _) | (Op::Mul, _, Operand::Const(0)) => {
                    Operand::Const(0)
                }
                (op, a, b) => {
                    kept.push(Inst {
                        op,
                        dst: i.dst,
                        a,
                        b,
                    });
                    Operand::Reg(i.dst)
                }
            };
            value.push(v);
        }
        let ret = subst(&value, f.ret);
        // Dead-code elimination: keep what the return value needs, walking backwards.
        let mut live = AVec::new_in(alloc);
        live.resize(f.insts.len(), false);
        if let Operand::Reg(r) = ret {
            live[r as usize] = true;
        }
        let mut insts = AVec::new_in(alloc);
        for i in kept.into_iter().rev() {
            if live[i.dst as usize] {
                for o in [i.a, i.b] {
                    if let Operand::Reg(r) = o {
                        live[r as usize] = true;
                    }
                }
                insts.push(i);
            }
        }
        insts.reverse();
        insts.shrink_to_fit();
        let mut name = AVec::with_capacity_in(f.name.len(), alloc);
        name.extend_from_slice(&f.name);
        out.push(IrFunc { name, insts, ret });
    }
    out
}

// ---- phase 4: emit ----------------------------------------------------------------------

fn emit<A: Allocator>(ir: &AVec<IrFunc<A>, A>) -> String {
    fn operand(o: Operand) -> String {
        match o {
            Operand::Const(c) => c.to_string(),
            Operand::Param(p) => format!("p{p}"),
            Operand::Reg(r) => format!("r{r}"),
        }
    }
    let mut out = String::new();
    for f in ir.iter() {
        writeln!(out, "{}:", String::from_utf8_lossy(&f.name)).unwrap();
        for i in f.insts.iter() {
            let (a, b) = (operand(i.a), operand(i.b));
            writeln!(out, "  r{} = {} {a}, {b}", i.dst, i.op.mnemonic()).unwrap();
        }
        writeln!(out, "  ret {}", operand(f.ret)).unwrap();
    }
    out
}

// ---- the pipeline -----------------------------------------------------------------------

/// Runs the pipeline with allocators `A`, calling `report(step, note)` after each phase
/// and each end of a phase; returns a hash of the output.
fn pipeline<A: Allocators>(src: &str, mut report: impl FnMut(&str, String)) -> u64 {
    let ast = parse(src, A::Parse::default());
    let nodes: usize = ast.iter().map(|f| f.body.len()).sum();
    report(
        "1. parse",
        format!("{} functions, {nodes} statements", ast.len()),
    );

    let ir = lower(&ast, A::Lower::default());
    let insts: usize = ir.iter().map(|f| f.insts.len()).sum();
    report("2. lower", format!("{insts} instructions"));
    // SAFETY: `ast` owns every Parse allocation; the IR copied what it needs (names).
    let note = unsafe { A::end(ast, Phase::Parse) };
    report("   end Parse", note);

    let opt = optimise(&ir, A::Opt::default());
    let kept: usize = opt.iter().map(|f| f.insts.len()).sum();
    report("3. optimise", format!("{kept} instructions kept"));
    // SAFETY: `ir` owns every Lower allocation (the scopes and vectors of `lower` and
    // `optimise`'s temporaries were freed); `opt` copied what it needs.
    let note = unsafe { A::end(ir, Phase::Lower) };
    report("   end Lower", note);

    let asm = emit(&opt);
    report(
        "4. emit",
        format!("{} of assembly", ByteSize::from(asm.len())),
    );
    // SAFETY: `opt` owns every Opt allocation; the text is on the global allocator.
    let note = unsafe { A::end(opt, Phase::Opt) };
    report("   end Opt", note);
    BuildHasherDefault::<DefaultHasher>::default().hash_one(&asm)
}

/// Child process: the pipeline with one set of allocators; one line per step:
/// `step <tab> rss <tab> note`, then the output's hash.
fn child(role: &str, funcs: usize) {
    let src = generate(funcs);
    let mut lines = vec![(
        "0. source".to_string(),
        rss(),
        format!("{} of source", ByteSize::from(src.len())),
    )];
    let report = |step: &str, note: String| lines.push((step.to_string(), rss(), note));
    let hash = match role {
        "cohort" => pipeline::<CohortPhases>(&src, report),
        _ => pipeline::<PlainPhases>(&src, report),
    };
    if role == "cohort" {
        let s = COHORT.stats();
        assert_eq!(s.small.live, 0, "every small allocation released:\n{s}");
        lines.push((
            "   left".to_string(),
            rss(),
            format!(
                "is_empty: {}; large allocations still live: {} ({})",
                COHORT.is_empty(),
                s.large_allocations,
                ByteSize::from(s.large_bytes)
            ),
        ));
        let c = COHORT.compact();
        lines.push((
            "   compact".to_string(),
            rss(),
            format!("{} empty blocks given back", c.blocks),
        ));
    }
    for (step, rss, note) in lines {
        println!("{step}\t{rss}\t{note}");
    }
    println!("{hash}");
}

fn main() {
    let funcs = env_number("COHORT_COMPILER_FUNCS", 8_000);
    if let Some(role) = child_role() {
        child(&role, funcs);
        return;
    }
    let run = |role: &str| {
        let out = run_child(&[role]);
        let mut lines: Vec<&str> = out.lines().collect();
        let hash = lines.pop().expect("the hash").to_string();
        let steps: Vec<(String, usize, String)> = lines
            .iter()
            .map(|l| {
                let mut f = l.split('\t');
                let step = f.next().unwrap().to_string();
                let rss = f.next().unwrap().parse().unwrap();
                (step, rss, f.next().unwrap_or("").to_string())
            })
            .collect();
        (steps, hash)
    };
    let (cohort, cohort_hash) = run("cohort");
    let (plain, plain_hash) = run("plain");
    assert_eq!(cohort_hash, plain_hash, "both pipelines emit the same code");
    println!(
        "A compiler pipeline over {funcs} generated functions; RSS after each step, \
         each pipeline in a fresh process."
    );
    println!("{:<13} {:>12} {:>12}  what", "step", "cohort", "system");
    for (step, rss, note) in &cohort {
        let system = plain
            .iter()
            .find(|p| &p.0 == step)
            .map_or("".to_string(), |p| ByteSize::from(p.1).to_string());
        println!(
            "{step:<13} {:>12} {system:>12}  {note}",
            ByteSize::from(*rss)
        );
    }
    println!("(both pipelines emit the same assembly)");
}
