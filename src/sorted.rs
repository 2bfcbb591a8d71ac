//! Two sorted maps walked side by side: how the store finds what changed between snapshots and
//! the xDS server what changed for a connection, in one ordered pass over both.

use std::cmp::Ordering;
use std::collections::BTreeMap;

/// A key of either map, with its value in each: `Old` only in the first, `New` only in the
/// second.
pub enum Side<'a, 'b, K, A, B> {
    Both(&'a A, &'b B),
    Old(&'a K, &'a A),
    New(&'b K, &'b B),
}

/// Calls `f` for every key of `old` and `new`, in key order.
pub fn merge_join<'a, 'b, K: Ord, A, B>(
    old: &'a BTreeMap<K, A>,
    new: &'b BTreeMap<K, B>,
    mut f: impl FnMut(Side<'a, 'b, K, A, B>),
) {
    let (mut a, mut b) = (old.iter().peekable(), new.iter().peekable());
    loop {
        let order = match (a.peek(), b.peek()) {
            (None, None) => return,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((x, _)), Some((y, _))) => x.cmp(y),
        };
        let side = match order {
            Ordering::Equal => a
                .next()
                .zip(b.next())
                .map(|((_, x), (_, y))| Side::Both(x, y)),
            Ordering::Less => a.next().map(|(k, x)| Side::Old(k, x)),
            Ordering::Greater => b.next().map(|(k, y)| Side::New(k, y)),
        };
        if let Some(side) = side {
            f(side);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_once_in_order() {
        let old = BTreeMap::from([(1, "a"), (2, "b"), (4, "d")]);
        let new = BTreeMap::from([(2, "B"), (3, "C"), (4, "d")]);
        let mut seen = Vec::new();
        merge_join(&old, &new, |side| {
            seen.push(match side {
                Side::Both(x, y) => format!("{x}{y}"),
                Side::Old(k, x) => format!("-{k}{x}"),
                Side::New(k, y) => format!("+{k}{y}"),
            })
        });
        assert_eq!(seen, ["-1a", "bB", "+3C", "dd"]);
    }
}
