//! How a refusal tells the operator to grant a capability: the `setcap` command, naming the
//! program that is actually running. The sidecar runs as `loupe-agent sidecar` and as `loupe
//! sidecar` (the CLI carries it as a subcommand), and a hint that said `loupe-agent` to
//! someone running `loupe` would have them grant a binary that is not the one refused.
//!
//! The program is the file this process was executed from (`/proc/self/exe`, the real file, as
//! `setcap` needs: it refuses a symlink), else `argv[0]`, else `$(which loupe-agent)`. When it
//! is not `loupe-agent`, the hint adds that file capabilities apply to every command of that
//! binary, since `setcap` on the `loupe` CLI would give CAP_SYS_PTRACE to all of it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The sidecar's own binary, whose only command is the sidecar.
const AGENT_BINARY: &str = "loupe-agent";

/// `setcap <capabilities>+ep <this program>`, for a message: `capabilities` is setcap's
/// comma-separated list, e.g. `cap_sys_ptrace`.
pub fn setcap(capabilities: &str) -> String {
    setcap_for(
        capabilities,
        std::env::current_exe().ok(),
        std::env::args_os().next(),
    )
}

/// [`setcap`] for a program found at `exe` (the executable file) or started as `argv0`.
fn setcap_for(capabilities: &str, exe: Option<PathBuf>, argv0: Option<OsString>) -> String {
    let program = exe
        .map(PathBuf::into_os_string)
        .or(argv0)
        .filter(|program| !program.is_empty());
    let Some(program) = program else {
        return format!("`setcap {capabilities}+ep $(which {AGENT_BINARY})`");
    };
    let shown = program.to_string_lossy();
    let shown = shown.strip_suffix(" (deleted)").unwrap_or(&shown);
    let command = format!("`setcap {capabilities}+ep {}`", shell_quoted(shown));
    if Path::new(shown).file_name() == Some(AGENT_BINARY.as_ref()) {
        command
    } else {
        format!(
            "{command} (file capabilities apply to every command of that binary; a separate \
             `{AGENT_BINARY}` binary keeps them to the sidecar)"
        )
    }
}

/// `text` as one shell word.
fn shell_quoted(text: &str) -> String {
    let plain = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%=,".contains(c));
    if plain && !text.is_empty() {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_names_the_program_that_runs() {
        assert_eq!(
            setcap_for(
                "cap_sys_ptrace",
                Some("/usr/local/bin/loupe-agent".into()),
                Some("loupe-agent".into())
            ),
            "`setcap cap_sys_ptrace+ep /usr/local/bin/loupe-agent`"
        );
        let under_cli = setcap_for(
            "cap_sys_admin,cap_sys_ptrace",
            Some("/usr/local/bin/loupe".into()),
            Some("loupe".into()),
        );
        assert!(
            under_cli.starts_with("`setcap cap_sys_admin,cap_sys_ptrace+ep /usr/local/bin/loupe`"),
            "{under_cli}"
        );
        assert!(!under_cli.contains("which"), "{under_cli}");
        assert!(under_cli.contains("every command"), "{under_cli}");
    }

    #[test]
    fn without_the_executable_argv0_then_the_agent_binary_is_named() {
        assert!(
            setcap_for("cap_sys_ptrace", None, Some("./bin/loupe".into()))
                .starts_with("`setcap cap_sys_ptrace+ep ./bin/loupe`")
        );
        assert_eq!(
            setcap_for("cap_sys_ptrace", None, None),
            "`setcap cap_sys_ptrace+ep $(which loupe-agent)`"
        );
        assert_eq!(
            setcap_for(
                "cap_sys_ptrace",
                Some("/opt/my tools/loupe-agent (deleted)".into()),
                None
            ),
            "`setcap cap_sys_ptrace+ep '/opt/my tools/loupe-agent'`"
        );
    }

    #[test]
    fn every_refusal_names_this_program() {
        let exe = std::env::current_exe().expect("current exe");
        let exe = exe.to_string_lossy();
        let messages = [
            crate::uprobe::ProbeError::NoCapSysAdmin.to_string(),
            crate::target::permission(i32::try_from(std::process::id()).expect("pid fits"))
                .to_string(),
            crate::elf::map_files_permission(1).to_string(),
        ];
        for message in messages {
            assert!(message.contains(&*exe), "{message}");
            assert!(!message.contains("which loupe-agent"), "{message}");
        }
    }
}
