//! The `<name>.d/` directory of a split stream: the archive's files as a directory tree,
//! built from the member list when the directory is first visited.
//!
//! Inode numbers: the `.d` directory itself is an ordinary node of the main tree; everything
//! under it gets `MEMBER_INO | tree << 32 | node`, where `tree` is a number given to each
//! (snapshot, stream) once for the life of the mount and `node` the position in this tree.
//! A hard link is a second name for its target's node (same inode, `st_nlink` counts both).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::fs::NodeKind;
use crate::source::{MemberInfo, MemberKind};

/// Set in every inode number under a `.d` directory.
pub const MEMBER_INO: u64 = 1 << 63;

/// The tree number and node index of a member inode.
pub fn split_ino(ino: u64) -> Option<(u32, u32)> {
    (ino & MEMBER_INO != 0).then_some((((ino & !MEMBER_INO) >> 32) as u32, ino as u32))
}

pub struct MNode {
    /// Parent's inode number (the `.d` directory's for top-level members).
    pub parent: u64,
    pub kind: NodeKind,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: SystemTime,
    pub size: u64,
    pub nlink: u32,
    pub target: Option<String>,
    /// Index in the member list of the member whose bytes this file holds.
    pub member: Option<usize>,
    pub children: Vec<(Arc<str>, u32)>,
    pub index: HashMap<Arc<str>, u32>,
}

pub struct MemberTree {
    pub nodes: Vec<MNode>,
    /// The snapshot id and stream name the members belong to.
    pub stream: (Arc<str>, Arc<str>),
    base: u64,
    root_ino: u64,
}

impl MemberTree {
    pub fn ino(&self, idx: u32) -> u64 {
        if idx == 0 {
            self.root_ino
        } else {
            self.base | u64::from(idx)
        }
    }

    /// Build from `members` (archive order; a later member of the same path replaces an
    /// earlier file, as `tar -x` does). Implicit directories get 0755, the snapshot time and
    /// the mount's owner, like the `.d` directory itself (0555).
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        members: &[MemberInfo],
        stream: (Arc<str>, Arc<str>),
        tree_no: u32,
        root_ino: u64,
        root_parent: u64,
        time: SystemTime,
        uid: u32,
        gid: u32,
    ) -> MemberTree {
        let dir = |parent: u64, perm: u16| MNode {
            parent,
            kind: NodeKind::Directory,
            perm,
            uid,
            gid,
            mtime: time,
            size: 0,
            nlink: 2,
            target: None,
            member: None,
            children: Vec::new(),
            index: HashMap::new(),
        };
        let mut t = MemberTree {
            nodes: vec![dir(root_parent, 0o555)],
            stream,
            base: MEMBER_INO | (u64::from(tree_no) << 32),
            root_ino,
        };
        for (i, m) in members.iter().enumerate() {
            let Some(comps) = normalise(&m.path) else {
                log::warn!("member {:?} hidden: not a path that can be shown", m.path);
                continue;
            };
            let Some((last, dirs)) = comps.split_last() else {
                continue; // `./` itself
            };
            let mut at = 0u32;
            let mut ok = true;
            for c in dirs {
                at = match t.nodes[at as usize].index.get(*c) {
                    Some(&n) if t.nodes[n as usize].kind == NodeKind::Directory => n,
                    Some(_) => {
                        ok = false;
                        break;
                    }
                    None => {
                        let parent = t.ino(at);
                        t.add(at, c, dir(parent, 0o755))
                    }
                };
            }
            if !ok {
                log::warn!("member {:?} hidden: a parent is not a directory", m.path);
                continue;
            }
            let parent = t.ino(at);
            let existing = t.nodes[at as usize].index.get(*last).copied();
            let node = match m.kind {
                MemberKind::Other => continue,
                MemberKind::Hardlink => {
                    let target = m
                        .link
                        .as_deref()
                        .and_then(normalise)
                        .and_then(|p| t.find(&p));
                    match (target, existing) {
                        (Some(n), None) if t.nodes[n as usize].kind == NodeKind::File => {
                            t.nodes[n as usize].nlink += 1;
                            t.link(at, last, n);
                        }
                        _ => log::warn!(
                            "hard link {:?} hidden: its target is not a file shown",
                            m.path
                        ),
                    }
                    continue;
                }
                MemberKind::Dir => {
                    if let Some(n) = existing {
                        let node = &mut t.nodes[n as usize];
                        if node.kind == NodeKind::Directory {
                            (node.perm, node.uid, node.gid, node.mtime) =
                                (m.perm, m.uid, m.gid, m.mtime);
                        }
                        continue;
                    }
                    MNode {
                        perm: m.perm,
                        uid: m.uid,
                        gid: m.gid,
                        mtime: m.mtime,
                        ..dir(parent, m.perm)
                    }
                }
                MemberKind::File | MemberKind::Symlink => {
                    let symlink = m.kind == MemberKind::Symlink;
                    let target = m.link.clone().filter(|_| symlink);
                    MNode {
                        parent,
                        kind: if symlink {
                            NodeKind::Symlink
                        } else {
                            NodeKind::File
                        },
                        perm: m.perm,
                        uid: m.uid,
                        gid: m.gid,
                        mtime: m.mtime,
                        size: target.as_ref().map_or(m.size, |l| l.len() as u64),
                        nlink: 1,
                        target,
                        member: (!symlink).then_some(i),
                        children: Vec::new(),
                        index: HashMap::new(),
                    }
                }
            };
            match existing {
                None => {
                    t.add(at, last, node);
                }
                Some(n)
                    if t.nodes[n as usize].kind != NodeKind::Directory
                        && node.kind != NodeKind::Directory =>
                {
                    // The later copy wins; hard links already made to the old one keep it.
                    let nlink = t.nodes[n as usize].nlink;
                    t.nodes[n as usize] = MNode { nlink, ..node };
                }
                Some(_) => log::warn!("member {:?} hidden: the name is taken", m.path),
            }
        }
        t
    }

    fn add(&mut self, parent: u32, name: &str, node: MNode) -> u32 {
        let idx = self.nodes.len() as u32;
        let is_dir = node.kind == NodeKind::Directory;
        self.nodes.push(node);
        self.link(parent, name, idx);
        if is_dir {
            self.nodes[parent as usize].nlink += 1;
        }
        idx
    }

    fn link(&mut self, parent: u32, name: &str, child: u32) {
        let name: Arc<str> = Arc::from(name);
        let p = &mut self.nodes[parent as usize];
        p.index.insert(Arc::clone(&name), child);
        p.children.push((name, child));
    }

    fn find(&self, comps: &[&str]) -> Option<u32> {
        let mut at = 0u32;
        for c in comps {
            at = *self.nodes[at as usize].index.get(*c)?;
        }
        Some(at)
    }
}

/// `./a//b/` → `[a, b]`; None for `..` or names the kernel cannot take.
fn normalise(path: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c if c.contains('\0') || c.len() > 255 => return None,
            c => out.push(c),
        }
    }
    Some(out)
}
