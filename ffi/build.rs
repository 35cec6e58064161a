//! Gives liboxccl.so an ELF soname carrying its ABI version (`liboxccl.so.0.1` while the
//! version is 0.x, `liboxccl.so.N` from 1.0 on), so that programs linked against one ABI
//! do not load another. ci/ffi-install.sh creates the matching links.

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" || os == "freebsd" {
        let major = env!("CARGO_PKG_VERSION_MAJOR");
        let minor = env!("CARGO_PKG_VERSION_MINOR");
        let abi = if major == "0" {
            format!("0.{minor}")
        } else {
            major.to_string()
        };
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,liboxccl.so.{abi}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
