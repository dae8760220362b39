//! Who runs a command: the operating-system user, as the kernel reports it (the real uid,
//! named through `getpwuid_r`), and the name they act under (`--actor`), which the access
//! policy must map to that user.

use super::policy::Policy;

/// An authenticated identity: the OS user, and the name recorded as the actor (the OS user's
/// own name unless the policy lets them act under another).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub os_user: String,
    pub actor: String,
}

/// The operating-system user running this process: the name of the real uid, or `uid:<n>` for
/// a uid with no passwd entry. Test builds may substitute one (`HOLDFAST_TEST_OS_USER`, see
/// [`crate::hooks`]); a plain build never does.
pub fn os_user() -> String {
    if let Some(u) = crate::hooks::os_user_override() {
        return u;
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    user_name(uid).unwrap_or_else(|| format!("uid:{uid}"))
}

/// The passwd name of `uid`, if it has one.
fn user_name(uid: libc::uid_t) -> Option<String> {
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: passwd is plain data; getpwuid_r fills it with pointers into `buf`, which
        // outlives every use of them below.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc = unsafe {
            libc::getpwuid_r(
                uid,
                &mut pwd,
                buf.as_mut_ptr().cast::<libc::c_char>(),
                buf.len(),
                &mut found,
            )
        };
        if rc == libc::ERANGE && buf.len() < (1 << 20) {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || found.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        // SAFETY: on success pw_name points at a NUL-terminated string inside `buf`.
        let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
        return name
            .to_str()
            .ok()
            .filter(|n| !n.is_empty())
            .map(str::to_string);
    }
}

/// The identity of `os_user` acting as `requested` (or as themselves): refused, with the
/// reason, unless `requested` is their own name or one the policy lets them act as.
pub fn resolve(
    policy: &Policy,
    os_user: &str,
    requested: Option<&str>,
) -> Result<Identity, String> {
    let actor = match requested.map(str::trim) {
        None | Some("") => os_user,
        Some(name) if policy.may_act_as(os_user, name) => name,
        Some(name) => {
            return Err(format!(
                "operating-system user {os_user} may not act as {name:?}: the access policy maps no such name to {os_user} (see `holdfast access show`)"
            ));
        }
    };
    Ok(Identity {
        os_user: os_user.to_string(),
        actor: actor.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_user_has_a_name() {
        let u = os_user();
        assert!(!u.is_empty());
        // SAFETY: as above
        let uid = unsafe { libc::getuid() };
        if crate::hooks::os_user_override().is_none() && uid == 0 {
            assert_eq!(u, "root");
        }
    }

    #[test]
    fn an_unknown_uid_has_no_name() {
        assert_eq!(user_name(4_000_000_000), None);
    }
}
