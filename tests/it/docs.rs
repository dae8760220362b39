//! The README and `docs/*.md` cannot drift from the binary: every ```` ```sh ```` block runs, in
//! the order of its file, in a fresh directory that holds the repository's `fixtures/`,
//! `pipelines/` and `sql/` (so `holdfast run pipelines/local.toml` makes the fixture store
//! `data`), with a keyring outside it. `holdfast` (and `cargo run --`) is the binary under test.
//!
//! - ```` ```sh no-run ```` blocks are skipped, and each skip is printed: they show what cannot
//!   run here (the test suite itself, a crontab line, services).
//! - A command line whose comment holds `as USER` runs as that OS user (the test hook
//!   `HOLDFAST_TEST_OS_USER`), `at TIME` with the clock pinned at TIME (`HOLDFAST_NOW`), and
//!   `exits N` must exit with N (default 0); pieces are separated by `,`.
//! - A line that starts with `holdfast` or `cargo run` outside a `sh` block is an error: every
//!   command shown is run or visibly skipped.
//!
//! The component map in the README is checked against `src/` as well.

use super::common;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One command of a `sh` block: its text (continuation lines and heredoc included), where it
/// starts, and what its comment asks for.
#[derive(Debug, Clone)]
pub struct DocCommand {
    pub line: usize,
    pub text: String,
    pub as_user: Option<String>,
    pub at: Option<String>,
    pub exits: i32,
}

/// The commands of a markdown file: those to run, and the lines of the `no-run` blocks.
#[derive(Debug, Default)]
pub struct DocCommands {
    pub run: Vec<DocCommand>,
    pub skipped: Vec<usize>,
}

fn is_command(line: &str) -> bool {
    let l = line.trim_start().trim_start_matches("$ ");
    l == "holdfast" || l.starts_with("holdfast ") || l.starts_with("cargo run")
}

/// `as kim`, `at 2031-01-01T00:00:00Z`, `exits 1` from a line's trailing comment.
fn directives(cmd: &mut DocCommand, line: &str) -> Result<(), String> {
    let Some(i) = line.find(" #") else {
        return Ok(());
    };
    for piece in line[i + 2..].split(',') {
        let mut words = piece.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("as"), Some(u), None) => cmd.as_user = Some(u.to_string()),
            (Some("at"), Some(t), None) if chrono::DateTime::parse_from_rfc3339(t).is_ok() => {
                cmd.at = Some(t.to_string())
            }
            (Some("exits"), Some(n), None) => {
                cmd.exits = n
                    .parse()
                    .map_err(|_| format!("line {}: bad exit code {n:?}", cmd.line))?
            }
            _ => {}
        }
    }
    Ok(())
}

/// Cuts a markdown file's `sh` blocks into commands.
pub fn parse(text: &str) -> Result<DocCommands, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = DocCommands::default();
    let mut i = 0;
    while i < lines.len() {
        let Some(info) = lines[i].trim_start().strip_prefix("```") else {
            i += 1;
            continue;
        };
        let fence_line = i + 1;
        let info: Vec<&str> = info.split_whitespace().collect();
        let kind = info.first().copied().unwrap_or("");
        let no_run = info.contains(&"no-run");
        i += 1;
        let start = i;
        while i < lines.len() && !lines[i].trim_start().starts_with("```") {
            i += 1;
        }
        if i == lines.len() {
            return Err(format!("line {fence_line}: unclosed code block"));
        }
        let body = &lines[start..i];
        i += 1;
        if kind != "sh" {
            if let Some(n) = body.iter().position(|l| is_command(l)) {
                return Err(format!(
                    "line {}: a command outside a ```sh block (mark it ```sh, or ```sh no-run when it cannot run in the test)",
                    start + n + 1
                ));
            }
            continue;
        }
        if no_run {
            out.skipped.push(fence_line);
            continue;
        }
        let mut j = 0;
        while j < body.len() {
            let first = body[j];
            if first.trim().is_empty() || first.trim_start().starts_with('#') {
                j += 1;
                continue;
            }
            let mut cmd = DocCommand {
                line: start + j + 1,
                text: String::new(),
                as_user: None,
                at: None,
                exits: 0,
            };
            let mut last;
            loop {
                let l = body[j];
                cmd.text.push_str(l);
                cmd.text.push('\n');
                last = l;
                j += 1;
                if !l.trim_end().ends_with('\\') || j == body.len() {
                    break;
                }
            }
            // a heredoc: its body up to the terminator belongs to the command
            if let Some(p) = cmd.text.find("<<") {
                let word: String = cmd.text[p + 2..]
                    .trim_start_matches('-')
                    .trim_start()
                    .chars()
                    .filter(|c| *c != '\'' && *c != '"')
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                loop {
                    let Some(l) = body.get(j) else {
                        return Err(format!("line {}: heredoc without {word}", cmd.line));
                    };
                    cmd.text.push_str(l);
                    cmd.text.push('\n');
                    j += 1;
                    if l.trim() == word {
                        break;
                    }
                }
            }
            directives(&mut cmd, last)?;
            out.run.push(cmd);
        }
    }
    Ok(out)
}

/// A fresh working directory for one file: the repository's fixtures, pipelines and named
/// queries, a `bin/holdfast` that is the binary under test, and room for the keyring.
struct Workdir {
    dir: tempfile::TempDir,
}

impl Workdir {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for d in ["fixtures", "pipelines", "sql"] {
            std::os::unix::fs::symlink(common::repo().join(d), dir.path().join(d)).unwrap();
        }
        let bin = dir.path().join(".bin");
        std::fs::create_dir(&bin).unwrap();
        std::os::unix::fs::symlink(common::bin(), bin.join("holdfast")).unwrap();
        Workdir { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn command(&self, c: &DocCommand) -> Command {
        let text = c
            .text
            .replace("cargo run --release --quiet -- ", "holdfast ")
            .replace("cargo run --release -- ", "holdfast ")
            .replace("cargo run --quiet -- ", "holdfast ")
            .replace("cargo run -- ", "holdfast ");
        let path = format!(
            "{}:{}",
            self.path(".bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(format!("set -o pipefail\n{text}"))
            .current_dir(self.dir.path())
            .stdin(std::process::Stdio::null())
            .env("PATH", path)
            .env("HOME", self.path("home"))
            .env("XDG_CONFIG_HOME", self.path("home/.config"))
            .env("XDG_STATE_HOME", self.path("home/.state"))
            .env("HOLDFAST_KEYRING", self.path("keys/keyring.json"))
            .env(
                common::OS_USER_VAR,
                c.as_user.as_deref().unwrap_or(common::OPERATOR),
            );
        for v in [
            "HOLDFAST_STORE",
            "HOLDFAST_ACTOR",
            "HOLDFAST_PIPELINE",
            "HOLDFAST_FAILPOINT",
            "HOLDFAST_NOW",
        ] {
            cmd.env_remove(v);
        }
        if let Some(t) = &c.at {
            cmd.env("HOLDFAST_NOW", t);
        }
        cmd
    }
}

fn clip(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.len() > 4000 {
        let mut end = 4000;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… ({} bytes)", &s[..end], s.len())
    } else {
        s.into_owned()
    }
}

/// Runs every command of `file` (relative to the repository) in order; the first failure is
/// an error naming the file, the line, the command and its output. Returns how many ran.
pub fn run_doc(file: &str, text: &str) -> Result<usize, String> {
    let cmds = parse(text).map_err(|e| format!("{file}: {e}"))?;
    for l in &cmds.skipped {
        eprintln!("{file}:{l}: ```sh no-run block skipped");
    }
    let w = Workdir::new();
    for c in &cmds.run {
        let out = w.command(c).output().unwrap();
        let code = out.status.code().unwrap_or(-1);
        if code != c.exits {
            return Err(format!(
                "{file}:{}: exit {code}, expected {}\n$ {}--- stdout\n{}\n--- stderr\n{}",
                c.line,
                c.exits,
                c.text,
                clip(&out.stdout),
                clip(&out.stderr)
            ));
        }
    }
    Ok(cmds.run.len())
}

fn check_doc(file: &str) {
    let text = std::fs::read_to_string(common::repo().join(file)).unwrap();
    match run_doc(file, &text) {
        Ok(n) => eprintln!("{file}: {n} command(s) ran"),
        Err(e) => panic!("{e}"),
    }
}

/// The run commands of a file, for other tests (the `--help` examples must be among them).
pub fn commands_of(file: &str) -> Vec<DocCommand> {
    let text = std::fs::read_to_string(common::repo().join(file)).unwrap();
    parse(&text).unwrap().run
}

macro_rules! doc {
    ($name:ident, $file:literal) => {
        #[test]
        fn $name() {
            check_doc($file);
        }
    };
}

doc!(readme, "README.md");
doc!(cli_reference, "docs/cli.md");
doc!(store_format, "docs/store-format.md");
doc!(retention_and_holds, "docs/retention-and-holds.md");
doc!(threat_model, "docs/threat-model.md");
doc!(performance, "docs/performance.md");
doc!(formats, "docs/formats.md");
doc!(s3, "docs/s3.md");

/// Every markdown file of docs/ has a case above (a new page is run too).
#[test]
fn every_doc_has_a_case() {
    let this = std::fs::read_to_string(common::repo().join("tests/it/docs.rs")).unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(common::repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for f in files {
        let name = format!("\"docs/{}\")", f.file_name().unwrap().to_string_lossy());
        assert!(
            this.contains(&name),
            "{name} has no doc! case in tests/it/docs.rs"
        );
    }
}

/// The harness itself: a failing command is reported with its file, line and output; a
/// command outside a `sh` block is refused; directives are read.
#[test]
fn harness_reports_the_failing_line() {
    let md = "# t\n\n```sh\nholdfast --version\n# a comment\nholdfast no-such-command\n```\n";
    let e = run_doc("x.md", md).unwrap_err();
    assert!(e.starts_with("x.md:6: exit 2, expected 0"), "{e}");
    assert!(e.contains("no-such-command"), "{e}");
    let e = parse("```\nholdfast verify --store data\n```\n").unwrap_err();
    assert!(e.contains("line 2: a command outside"), "{e}");
    let p = parse(concat!(
        "```sh no-run\ntests/run.sh\n```\n",
        "```sh\nholdfast a \\\n  b   # as kim, exits 1\n",
        "cat > h.json <<'EOF'\n{}\nEOF\n",
        "holdfast c  # at 2031-01-01T00:00:00Z, at once\n```\n"
    ))
    .unwrap();
    assert_eq!(p.skipped, vec![1]);
    assert_eq!(p.run.len(), 3);
    assert_eq!(p.run[0].line, 5);
    assert_eq!(p.run[0].as_user.as_deref(), Some("kim"));
    assert_eq!(p.run[0].exits, 1);
    assert_eq!(p.run[1].text, "cat > h.json <<'EOF'\n{}\nEOF\n");
    assert_eq!(p.run[2].at.as_deref(), Some("2031-01-01T00:00:00Z"));
    assert_eq!(run_doc("y.md", "```sh\nholdfast --version\n```\n"), Ok(1));
}

/// The README's component map lists every source file under `src/` (but the unit-test files,
/// `tests.rs`), and nothing that is not there.
#[test]
fn component_map_matches_src() {
    let readme = std::fs::read_to_string(common::repo().join("README.md")).unwrap();
    let start = readme
        .find("\n```text\nsrc/\n")
        .expect("README: a ```text block starting with src/ (the component map)");
    let block = &readme[start + 9..];
    let block = &block[..block.find("```").unwrap()];
    let mut listed = std::collections::BTreeSet::new();
    let mut stack: Vec<String> = Vec::new();
    for line in block.lines() {
        let indent = line.len() - line.trim_start().len();
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let depth = indent / 2;
        stack.truncate(depth);
        let path = format!("{}{name}", stack.concat());
        if name.ends_with('/') {
            stack.push(name.to_string());
        } else {
            assert!(
                line.trim_start().len() > name.len(),
                "README component map: {path} has no description"
            );
            listed.insert(path);
        }
    }
    fn walk(d: &Path, out: &mut std::collections::BTreeSet<String>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out)
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(common::repo()).unwrap();
                let name = rel.file_name().unwrap().to_string_lossy();
                if name != "tests.rs" && !name.ends_with("_tests.rs") {
                    out.insert(rel.to_string_lossy().into_owned());
                }
            }
        }
    }
    let mut actual = std::collections::BTreeSet::new();
    walk(&common::repo().join("src"), &mut actual);
    let missing: Vec<_> = actual.difference(&listed).collect();
    let extra: Vec<_> = listed.difference(&actual).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "README component map out of date: not listed {missing:?}; listed but not in src/ {extra:?}"
    );
}
