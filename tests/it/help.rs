//! `--help` of every command: a one-line description and an example. Each example parses as
//! the command it documents, and `docs/cli.md` runs it against the fixture store (see
//! `docs.rs`), so an example that stops working fails there.

use super::docs;
use clap::CommandFactory;
use holdfast::cli::Cli;

/// Every command below the root, with its path (`["hold", "apply"]`).
fn commands() -> Vec<(Vec<String>, clap::Command)> {
    fn walk(c: &clap::Command, path: &[String], out: &mut Vec<(Vec<String>, clap::Command)>) {
        for s in c.get_subcommands().filter(|s| s.get_name() != "help") {
            let mut p = path.to_vec();
            p.push(s.get_name().to_string());
            out.push((p.clone(), s.clone()));
            walk(s, &p, out);
        }
    }
    let mut out = Vec::new();
    walk(&Cli::command(), &[], &mut out);
    out
}

/// The example lines of a command's help: the lines after `Example:`.
fn examples(c: &clap::Command) -> Vec<String> {
    let text = c
        .get_after_help()
        .or(c.get_after_long_help())
        .map(|s| s.to_string())
        .unwrap_or_default();
    let Some(rest) = text
        .strip_prefix("Example:\n")
        .or(text.strip_prefix("Examples:\n"))
    else {
        return Vec::new();
    };
    rest.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// The `holdfast` invocation of an example line (after a `… | ` feeding its stdin), or `None`
/// for a line that only prepares one.
fn invocation(line: &str) -> Option<&str> {
    if line.starts_with("holdfast ") {
        Some(line)
    } else {
        line.find("| holdfast ").map(|i| &line[i + 2..])
    }
}

/// Splits a command line as the shell does for the quoting used in examples: whitespace
/// separates words, '…' and "…" quote (a `$(…)` inside stays text), `\` escapes.
fn argv(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                w.extend(chars.by_ref().take_while(|&c| c != '\''));
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => w.extend(chars.next()),
                        c => w.push(c),
                    }
                }
            }
            '\\' => word.get_or_insert_with(String::new).extend(chars.next()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

#[test]
fn argv_splits_as_the_shell() {
    assert_eq!(
        argv(r#"holdfast q --x 'a b' "c \"d\" $(e | f)" g\ h"#),
        ["holdfast", "q", "--x", "a b", r#"c "d" $(e | f)"#, "g h"]
    );
}

/// The subcommand path clap parsed.
fn parsed_path(m: &clap::ArgMatches) -> Vec<String> {
    let mut path = Vec::new();
    let mut m = m;
    while let Some((name, sub)) = m.subcommand() {
        path.push(name.to_string());
        m = sub;
    }
    path
}

#[test]
fn every_command_has_a_one_line_about_and_an_example() {
    let cmds = commands();
    assert!(cmds.len() > 30, "only {} commands found", cmds.len());
    let mut problems = Vec::new();
    for (path, c) in &cmds {
        let name = path.join(" ");
        match c.get_about().map(|a| a.to_string()) {
            None => problems.push(format!("{name}: no about")),
            Some(a) if a.trim().is_empty() || a.contains('\n') || a.chars().count() > 100 => {
                problems.push(format!(
                    "{name}: about is not one line of at most 100 characters: {a:?}"
                ))
            }
            Some(_) => {}
        }
        if !examples(c).iter().any(|l| invocation(l).is_some()) {
            problems.push(format!(
                "{name}: no example (after_help = \"Example:\\n  holdfast {name} ...\")"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_example_parses_as_its_command_and_runs_in_the_cli_reference() {
    let run: Vec<String> = docs::commands_of("docs/cli.md")
        .into_iter()
        .map(|c| c.text)
        .collect();
    let mut problems = Vec::new();
    let mut n = 0;
    for (path, c) in commands() {
        for ex in examples(&c) {
            if !run.iter().any(|t| t.contains(&ex)) {
                problems.push(format!(
                    "{ex}: not among the commands docs/cli.md runs (copy it there, in a ```sh block)"
                ));
            }
            let Some(inv) = invocation(&ex) else {
                continue;
            };
            n += 1;
            match Cli::command().try_get_matches_from(argv(inv)) {
                Err(e) => problems.push(format!("{ex}: does not parse: {e}")),
                Ok(m) if !parsed_path(&m).starts_with(&path) => problems.push(format!(
                    "{ex}: parses as `{}`, not `{}`",
                    parsed_path(&m).join(" "),
                    path.join(" ")
                )),
                Ok(_) => {}
            }
        }
    }
    assert!(n > 30, "only {n} examples");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The help the binary prints shows the example (clap prints `after_help` with `-h` and
/// `--help`).
#[test]
fn help_output_shows_the_example() {
    let env_free = |args: &[&str]| {
        let out = std::process::Command::new(super::common::bin())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    for args in [
        &["hold", "apply", "--help"][..],
        &["verify", "-h"],
        &["audit", "--help"],
    ] {
        let out = env_free(args);
        assert!(out.contains("Example:\n  holdfast "), "{args:?}: {out}");
    }
}

/// Every argument of every command says what it is (`--help` shows no bare `--file <FILE>`).
#[test]
fn every_argument_has_help() {
    let mut bare = Vec::new();
    for (path, c) in commands() {
        for a in c.get_arguments() {
            let id = a.get_id().as_str();
            if a.is_hide_set() || id == "help" || id == "version" {
                continue;
            }
            if a.get_help().is_none() && a.get_long_help().is_none() {
                bare.push(format!("{} {id}", path.join(" ")));
            }
        }
    }
    assert!(commands().len() > 20, "the whole command tree was walked");
    assert!(bare.is_empty(), "arguments without help: {bare:#?}");
}
