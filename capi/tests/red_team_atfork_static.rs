//! Red-team attacks (session 19, second round) on RED-89's fix: cohort's fork handlers are
//! registered by an ELF constructor (`fork::REGISTER_AT_LOAD`), whose `pthread_atfork` may
//! itself allocate: glibc keeps the first 48 handlers in a static array and grows its list
//! with `malloc` at the 49th registration (then `realloc`). In a program whose `malloc` is
//! cohort's (linked with `libcohort.a`, or `libcohort.so` preloaded) that allocation is
//! cohort's first, whose instance registers the handlers first (`fork::lock_list`), and
//! waits for the registration in progress: its own, for ever.
//!
//! And the constructor runs after the program's own in a static link (RED-97), and after
//! those of the program's shared libraries under `LD_PRELOAD` (RED-100), so a fork handler
//! they register is registered before cohort's (RED-89).
//!
//! A C program linked statically with `libcohort.a` runs its own constructors first (its
//! object comes before the library's in the link, and so do its `.init_array` entries):
//! one that registers 48 handlers (none allocating) makes cohort's the 49th. The program
//! is compiled here with the system's C compiler (`cc`) against the `libcohort.a` next to
//! the `libcohort.so` the other tests preload; it stops itself after 3 s (`alarm`: a
//! bound on a hang, not a measurement).

mod preloaded;

use std::process::Command;

/// A fork handler of the programs: nothing, or (`allocate`) a slow-path allocation.
const HANDLERS: &str = r#"
static void handler(void) {}
static void allocate(void) { void *volatile p = malloc(1 << 20); free(p); }
"#;

/// The C program: its constructor (run before cohort's) runs `registrations` (calls of
/// `pthread_atfork` with [`HANDLERS`]); then a `malloc`, a fork whose child allocates, and
/// a `free`.
fn program(registrations: &str) -> String {
    format!(
        r#"
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
{HANDLERS}
static void say(const char *s) {{ write(1, s, strlen(s)); }}
__attribute__((constructor)) static void register_handlers(void) {{
  alarm(3);
  {registrations}
  say("registered\n");
}}
int main(void) {{
  say("main\n");
  void *volatile p = malloc(100);
  if (malloc_usable_size(p) != 112) say("malloc is not cohort's\n");
  pid_t pid = fork();
  if (pid == 0) {{ free(malloc(10)); _exit(0); }}
  int status = 0;
  if (waitpid(pid, &status, 0) != pid || status != 0) say("the child failed\n");
  free(p);
  say("done\n");
  return 0;
}}
"#
    )
}

/// [`program`]'s registrations of `n` handlers that do nothing.
fn handlers(n: usize) -> String {
    format!("for (int i = 0; i < {n}; i++) pthread_atfork(handler, handler, handler);")
}

/// How a program of this file gets cohort's `malloc`, and where `registrations` run.
#[derive(Clone, Copy, Debug)]
enum Linking {
    /// Linked with `libcohort.a`; the program's constructor runs them.
    Static,
    /// `libcohort.so` preloaded (the drop-in); the constructor of a shared library the
    /// program links with runs them (the program's runs none).
    Preloaded,
}

/// The shared library of [`Linking::Preloaded`]: its constructor runs `registrations`,
/// under the same bound as the program's (its constructor runs before cohort's and the
/// program's).
fn library(registrations: &str) -> String {
    format!(
        r#"
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>
{HANDLERS}
__attribute__((constructor)) static void library_init(void) {{
  alarm(3);
  {registrations}
}}
"#
    )
}

/// Runs `cc` with `args`; fails with its message.
fn cc(args: &[&std::ffi::OsStr]) {
    let built = Command::new("cc").args(args).output().expect("cc");
    assert!(
        built.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&built.stderr)
    );
}

/// Compiles [`program`] (with `registrations` where `linking` says) and runs it: its
/// output.
fn run_built(registrations: &str, linking: Linking) -> std::process::Output {
    let lib = preloaded::library();
    let archive = lib.with_extension("a");
    assert!(
        archive.exists(),
        "{} (cargo build -p cohort-c)",
        archive.display()
    );
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "cohort-red-team-atfork-static-{}-{run}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (source, exe) = (dir.join("program.c"), dir.join("program"));
    let o = |s: &'static str| std::ffi::OsStr::new(s);
    let mut command = Command::new(&exe);
    match linking {
        Linking::Static => {
            std::fs::write(&source, program(registrations)).unwrap();
            let mut args = vec![o("-O0"), o("-fno-builtin"), source.as_os_str()];
            args.extend([archive.as_os_str(), o("-lpthread"), o("-ldl"), o("-lm")]);
            cc(&[args, vec![o("-o"), exe.as_os_str()]].concat());
        }
        Linking::Preloaded => {
            let (lib_source, shared) = (dir.join("library.c"), dir.join("libred.so"));
            std::fs::write(&lib_source, library(registrations)).unwrap();
            cc(&[
                o("-O0"),
                o("-fPIC"),
                o("-shared"),
                lib_source.as_os_str(),
                o("-o"),
                shared.as_os_str(),
            ]);
            std::fs::write(&source, program("")).unwrap();
            let search = std::ffi::OsString::from(format!("-L{}", dir.display()));
            let rpath = std::ffi::OsString::from(format!("-Wl,-rpath,{}", dir.display()));
            cc(&[
                o("-O0"),
                o("-fno-builtin"),
                source.as_os_str(),
                &search,
                o("-Wl,--no-as-needed"),
                o("-lred"),
                &rpath,
                o("-o"),
                exe.as_os_str(),
            ]);
            command.env("LD_PRELOAD", &lib);
        }
    }
    let out = command.output().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    out
}

/// The outcome of [`run_built`] when it is not a clean "done".
fn failure(registrations: &str, linking: Linking) -> Option<String> {
    let out = run_built(registrations, linking);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let ok = out.status.success() && stdout.ends_with("done\n") && !stdout.contains("not");
    (!ok).then(|| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let how = test_support::how_it_ended(&out.status, &stderr, &["cohort"]);
        format!("{linking:?} {registrations}: {how}, {stdout:?}")
    })
}

/// The failures of the programs with `counts` handlers registered before cohort's (linked
/// statically) and of the preloaded program whose library registers `preloaded`.
fn failures_with_handlers(counts: [usize; 2], preloaded: usize) -> Vec<String> {
    counts
        .map(|n| (handlers(n), Linking::Static))
        .into_iter()
        .chain([(handlers(preloaded), Linking::Preloaded)])
        .filter_map(|(r, linking)| failure(&r, linking))
        .collect()
}

/// RED-96: on lead e393384 both programs hang before `main` (SIGALRM). 48 handlers before
/// cohort's (after "registered"): cohort's constructor's `pthread_atfork` is the 49th and
/// calls `malloc` (glibc's list grows); cohort's first allocation initialises its
/// instance, whose `fork::lock_list` spins in `ensure_registered` on the registration its
/// own thread is making (`REGISTERING` by this process). 49 handlers (nothing printed):
/// the program's own 49th `pthread_atfork` calls `malloc`, cohort's first allocation,
/// whose `lock_list` registers cohort's handlers inside that `pthread_atfork`, which holds
/// glibc's lock of the list (not recursive). Under `LD_PRELOAD` (see RED-100), a library
/// whose constructor registers 48 handlers makes cohort's the 49th as well.
#[test]
fn registering_the_fork_handlers_may_allocate_from_cohort() {
    let failed = failures_with_handlers([48, 49], 48);
    assert!(failed.is_empty(), "{failed:#?}");
}

/// Guard: no handler and 47 handlers before cohort's (no allocation inside any
/// `pthread_atfork` before cohort's instance exists) run through, and so does a preloaded
/// program whose library registers 47 handlers that do nothing.
#[test]
fn guard_a_static_program_with_other_fork_handlers_runs() {
    let failed = failures_with_handlers([0, 47], 47);
    assert!(failed.is_empty(), "{failed:#?}");
}

/// RED-97: RED-89 in a program linked statically with `libcohort.a`: its constructors run
/// before cohort's (its object's `.init_array` entries come first), so a fork handler one
/// of them registers is registered before cohort's, and its prepare runs while cohort's
/// locks are held: on lead e393384 the program whose handlers allocate 1 MiB (a large
/// allocation) hangs in its fork (SIGALRM after "main"). `fork::REGISTER_AT_LOAD`'s docs
/// say the registration runs "before any code the program runs registers its own".
#[test]
fn a_static_programs_constructor_may_register_a_fork_handler_that_allocates() {
    let failed = failure(ALLOCATING, Linking::Static);
    assert!(failed.is_none(), "{failed:?}");
}

/// A registration of a fork handler that allocates, for [`program`] or [`library`].
const ALLOCATING: &str = "pthread_atfork(allocate, allocate, allocate);";

/// RED-100: RED-89 under `LD_PRELOAD=libcohort.so`, the drop-in's own use: the loader runs
/// the constructors of the program's libraries before the preloaded one's (`LD_DEBUG=files`:
/// libc, libgcc_s, the program's library, then libcohort.so), so a fork handler a library
/// registers in its constructor is registered before cohort's: on lead e393384 the program
/// whose library's handlers allocate 1 MiB hangs in its fork (SIGALRM after "main").
#[test]
fn a_preloaded_programs_library_may_register_a_fork_handler_that_allocates() {
    let failed = failure(ALLOCATING, Linking::Preloaded);
    assert!(failed.is_none(), "{failed:?}");
}
