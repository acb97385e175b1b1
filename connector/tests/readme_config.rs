//! The README's configuration tables cannot drift from the code: every environment variable the connector
//! reads through its flags must be documented there.

use clap::CommandFactory;
use lumenore_connector::config::Config;

#[test]
fn every_environment_variable_is_documented_in_the_readme() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let command = Config::command();
    let missing: Vec<String> = command
        .get_arguments()
        .filter_map(|arg| arg.get_env().map(|env| env.to_string_lossy().into_owned()))
        .filter(|env| !readme.contains(&format!("`{env}`")))
        .collect();
    assert!(missing.is_empty(), "README.md does not document: {missing:?}");
    for secret in ["LUMENORE_CLIENT_ID", "LUMENORE_SECRET", "LUMENORE_API_KEY"] {
        assert!(readme.contains(secret), "README.md does not document {secret}");
    }
}
