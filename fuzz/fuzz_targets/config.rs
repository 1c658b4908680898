//! Any text as a configuration file through `vigil::config::Config::from_toml` (TOML, strict:
//! unknown keys refused) and, when it parses, `validate()` again. Must never panic: a bad file is
//! an error naming the problem, and a file accepted once is accepted again (validation only
//! reads the config).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml(text) {
        Ok(config) => {
            if let Err(e) = config.validate() {
                panic!("a config from_toml accepted fails validate(): {e}");
            }
            if let Err(e) = config.context.validate() {
                panic!("an accepted config's context fails validate(): {e}");
            }
            // Cloning and comparing walk every field (derives only; cheap sanity).
            assert_eq!(config.clone(), config);
        }
        Err(message) => assert!(!message.is_empty()),
    }
});
