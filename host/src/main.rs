//! The `warden` binary.

fn main() {
    warden_host::cli::main();
}
