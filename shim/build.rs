fn main() {
    // The shim must be found by glibc as the driver: a later dlopen("libcuda.so.1") matches by SONAME.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcuda.so.1");
}
