#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    baton_daemon::fuzz::ring(data);
    baton_daemon::fuzz::ring_attach(data);
});
