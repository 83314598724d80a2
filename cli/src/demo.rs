//! `baton demo`: Baton at work on a machine without a GPU. Starts a private `batond` on the
//! simulated GPU, runs two client programs of two tenants through the shim, shows
//! `baton status` while they hold their memory, then stops everything and removes its files.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

const TENANTS: [&str; 2] = ["alice", "bob"];

/// The simulator's module image: its built-in kernels, by name and parameter sizes.
const SIM_IMAGE: &[u8] = b"//baton-sim\nkernel vecAdd 8 8 8 4\n\0";

/// Each client's vector length and the device memory it holds while status is shown.
const N: usize = 1 << 20;
const HELD: usize = 64 << 20;

const POLICY: &str = "\
# baton demo: a fair share of the GPU between its two tenants.
[daemon]
policy = \"fair\"

[[tenant]]
name = \"alice\"
memory_quota = \"512MiB\"

[[tenant]]
name = \"bob\"
memory_quota = \"256MiB\"
";

/// Everything the demo started; dropping it stops and removes all of it.
struct Demo {
    dir: PathBuf,
    daemon: Option<Child>,
    clients: Vec<(Child, Option<ChildStdin>)>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        for (c, stdin) in &mut self.clients {
            drop(stdin.take());
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(d) = &mut self.daemon {
            stop_daemon(d);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// SIGTERM, then SIGKILL if it has not gone within 5 s.
fn stop_daemon(d: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(d.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = d.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = d.kill();
    let _ = d.wait();
}

pub fn run() -> Result<(), String> {
    println!("Baton demo. The GPU here is SIMULATED: batond runs with --executor sim, which");
    println!("executes Baton's built-in test kernels on the CPU. No GPU or NVIDIA driver is used,");
    println!("and only these demo clients can run on it; real CUDA programs need a real GPU.");
    println!();
    let dir = std::env::temp_dir().join(format!("baton-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(|e| format!("chmod {}: {e}", dir.display()))?;
    let mut demo = Demo {
        dir: dir.clone(),
        daemon: None,
        clients: Vec::new(),
    };
    let socket = dir.join("baton.sock");
    let log = dir.join("batond.log");
    let policy = dir.join("baton.toml");
    std::fs::write(&policy, POLICY).map_err(|e| format!("writing {}: {e}", policy.display()))?;

    let batond = crate::launcher::beside_exe("batond")?;
    let log_file =
        std::fs::File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
    let daemon = Command::new(&batond)
        .args(["--executor", "sim", "--socket-mode", "600", "--socket"])
        .arg(&socket)
        .arg("--config")
        .arg(&policy)
        .env_remove("LD_PRELOAD")
        .env_remove("BATON_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", batond.display()))?;
    println!(
        "1. started batond (pid {}) on a private socket: {} --executor sim --socket {}",
        daemon.id(),
        batond.display(),
        socket.display()
    );
    demo.daemon = Some(daemon);
    wait_for_socket(&mut demo, &socket, &log)?;

    let shim = crate::launcher::shim_path()?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    println!(
        "2. two programs of two tenants use the shim ({}) to add {N} floats each on it:",
        shim.display()
    );
    for tenant in TENANTS {
        let mut c = Command::new(&exe)
            .arg("demo-client")
            .env(baton_ipc::control::SOCKET_ENV, &socket)
            .env("BATON_TENANT", tenant)
            .env("BATON_SHIM", &shim)
            .env_remove("LD_PRELOAD")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting a demo client: {e}"))?;
        let stdin = c.stdin.take();
        demo.clients.push((c, stdin));
    }
    for (i, (c, _)) in demo.clients.iter_mut().enumerate() {
        let out = c.stdout.take().ok_or("no client output")?;
        let mut line = String::new();
        BufReader::new(out)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        if !line.starts_with("ok") {
            return Err(format!(
                "the {} client failed (its error is above); the daemon's log:\n{}",
                TENANTS[i],
                std::fs::read_to_string(&log).unwrap_or_default()
            ));
        }
        print!("   {}: {}", TENANTS[i], line.trim_start_matches("ok "));
    }
    println!();
    println!(
        "3. `baton status --socket {}` while both are connected:",
        socket.display()
    );
    crate::status::show(Some(socket.clone()), false)?;
    println!();
    for (i, (c, stdin)) in demo.clients.iter_mut().enumerate() {
        drop(stdin.take());
        let st = c.wait().map_err(|e| e.to_string())?;
        if !st.success() {
            return Err(format!("the {} client exited with {st}", TENANTS[i]));
        }
    }
    demo.clients.clear();
    if let Some(mut d) = demo.daemon.take() {
        stop_daemon(&mut d);
    }
    println!(
        "4. the clients exited, batond stopped, and {} is removed.",
        dir.display()
    );
    println!();
    println!(
        "On a machine with an NVIDIA GPU: `baton run -- ./your_cuda_program` (see README.md)."
    );
    Ok(())
}

fn wait_for_socket(demo: &mut Demo, socket: &Path, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if crate::socket::connect(socket).is_ok() {
            return Ok(());
        }
        let d = demo.daemon.as_mut().ok_or("no daemon")?;
        if let Ok(Some(st)) = d.try_wait() {
            return Err(format!(
                "batond exited ({st}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "batond did not start in 20 s; see {}",
                log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

type CuResult = c_int;
type Ptr = *mut c_void;

/// The driver entry points the demo client calls, from the shim.
struct Driver {
    _lib: libloading::Library,
    init: unsafe extern "C" fn(c_uint) -> CuResult,
    device_name: unsafe extern "C" fn(*mut c_char, c_int, c_int) -> CuResult,
    ctx_retain: unsafe extern "C" fn(*mut Ptr, c_int) -> CuResult,
    ctx_set: unsafe extern "C" fn(Ptr) -> CuResult,
    load: unsafe extern "C" fn(*mut Ptr, *const c_void) -> CuResult,
    function: unsafe extern "C" fn(*mut Ptr, Ptr, *const c_char) -> CuResult,
    alloc: unsafe extern "C" fn(*mut u64, usize) -> CuResult,
    htod: unsafe extern "C" fn(u64, *const c_void, usize) -> CuResult,
    dtoh: unsafe extern "C" fn(*mut c_void, u64, usize) -> CuResult,
    launch: unsafe extern "C" fn(
        Ptr,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        Ptr,
        *mut Ptr,
        *mut Ptr,
    ) -> CuResult,
}

impl Driver {
    fn open(shim: &Path) -> Result<Driver, String> {
        // SAFETY: the shim is Baton's own libcuda.so.1; loading it runs no code that needs
        // anything from us.
        let lib = unsafe { libloading::Library::new(shim) }
            .map_err(|e| format!("loading the shim {}: {e}", shim.display()))?;
        macro_rules! sym {
            ($name:literal) => {
                // SAFETY: the field's type is the driver API's signature of this entry point,
                // and the library stays loaded as long as the pointer (`_lib`).
                *unsafe { lib.get($name) }
                    .map_err(|e| format!("the shim lacks an entry point: {e}"))?
            };
        }
        Ok(Driver {
            init: sym!(b"cuInit\0"),
            device_name: sym!(b"cuDeviceGetName\0"),
            ctx_retain: sym!(b"cuDevicePrimaryCtxRetain\0"),
            ctx_set: sym!(b"cuCtxSetCurrent\0"),
            load: sym!(b"cuModuleLoadData\0"),
            function: sym!(b"cuModuleGetFunction\0"),
            alloc: sym!(b"cuMemAlloc_v2\0"),
            htod: sym!(b"cuMemcpyHtoD_v2\0"),
            dtoh: sym!(b"cuMemcpyDtoH_v2\0"),
            launch: sym!(b"cuLaunchKernel\0"),
            _lib: lib,
        })
    }
}

fn check(r: CuResult, what: &str) -> Result<(), String> {
    match r {
        0 => Ok(()),
        e => Err(format!("{what} failed with CUDA error {e}")),
    }
}

/// The hidden `baton demo-client`: one client program, through the shim named by
/// `$BATON_SHIM`. Prints one line starting with `ok` once its result is checked, then holds
/// its memory until its stdin closes.
pub fn client() -> Result<(), String> {
    let shim = crate::launcher::shim_path()?;
    let cu = Driver::open(&shim)?;
    let mut name = [0 as c_char; 64];
    let (mut ctx, mut module, mut add) = (
        std::ptr::null_mut(),
        std::ptr::null_mut(),
        std::ptr::null_mut(),
    );
    let x: Vec<f32> = (0..N).map(|i| i as f32).collect();
    let y: Vec<f32> = (0..N).map(|i| (2 * i) as f32 + 0.5).collect();
    let mut out = vec![0f32; N];
    let [mut a, mut b, mut c, mut held] = [0u64; 4];
    let bytes = N * 4;
    // SAFETY: each call gets out-pointers to locals of the types the driver API writes, host
    // buffers of `bytes` bytes for the copies, and device buffers of `bytes` bytes for the
    // kernel, whose four parameters (three pointers, one int) match `params`.
    unsafe {
        check((cu.init)(0), "cuInit")?;
        check(
            (cu.device_name)(name.as_mut_ptr(), 64, 0),
            "cuDeviceGetName",
        )?;
        check((cu.ctx_retain)(&mut ctx, 0), "cuDevicePrimaryCtxRetain")?;
        check((cu.ctx_set)(ctx), "cuCtxSetCurrent")?;
        check(
            (cu.load)(&mut module, SIM_IMAGE.as_ptr() as *const c_void),
            "cuModuleLoadData",
        )?;
        check(
            (cu.function)(&mut add, module, c"vecAdd".as_ptr()),
            "cuModuleGetFunction",
        )?;
        for p in [&mut a, &mut b, &mut c] {
            check((cu.alloc)(p, bytes), "cuMemAlloc")?;
        }
        check((cu.alloc)(&mut held, HELD), "cuMemAlloc")?;
        check(
            (cu.htod)(a, x.as_ptr() as *const c_void, bytes),
            "cuMemcpyHtoD",
        )?;
        check(
            (cu.htod)(b, y.as_ptr() as *const c_void, bytes),
            "cuMemcpyHtoD",
        )?;
        let mut n = N as c_int;
        let mut params: [Ptr; 4] = [
            &mut a as *mut u64 as Ptr,
            &mut b as *mut u64 as Ptr,
            &mut c as *mut u64 as Ptr,
            &mut n as *mut c_int as Ptr,
        ];
        let blocks = (N as u32).div_ceil(256);
        check(
            (cu.launch)(
                add,
                blocks,
                1,
                1,
                256,
                1,
                1,
                0,
                std::ptr::null_mut(),
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            ),
            "cuLaunchKernel",
        )?;
        check(
            (cu.dtoh)(out.as_mut_ptr() as *mut c_void, c, bytes),
            "cuMemcpyDtoH",
        )?;
    }
    if let Some(i) = (0..N).find(|&i| out[i] != x[i] + y[i]) {
        return Err(format!(
            "wrong result at {i}: {} + {} gave {}",
            x[i], y[i], out[i]
        ));
    }
    // SAFETY: the driver wrote a NUL-terminated name into the 64-byte buffer.
    let device = unsafe { CStr::from_ptr(name.as_ptr()) }.to_string_lossy();
    let mut stdout = std::io::stdout();
    let _ = writeln!(
        stdout,
        "ok vecAdd on \"{device}\" (pid {}) checked all {N} sums; holding {} MiB of device memory",
        std::process::id(),
        HELD >> 20
    );
    let _ = stdout.flush();
    let mut rest = String::new();
    let _ = std::io::stdin().read_line(&mut rest);
    Ok(())
}
