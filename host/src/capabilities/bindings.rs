//! Host bindings generated from `sdk/wit/warden.wit`; the `bindgen!` call alone.
//!
//! Every import is `async` (host calls do network I/O and await durable audit writes) and
//! `trappable` (a host call can end the run when it breaks a per-run limit; a policy
//! denial, by contrast, is an ordinary guest-visible `error`).

wasmtime::component::bindgen!({
    path: "../sdk/wit",
    world: "warden:task/task",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "warden:task/credentials.credential": crate::capabilities::credentials::CredentialHandle,
    },
});

pub use warden::task::{credentials, log, params, ssh, transfer, types};
