//! The `warden` command line, built inside the test crate so integration tests can run the real
//! command line (`CARGO_BIN_EXE_warden`) without a nested cargo build.

fn main() {
    warden_host::cli::main();
}
