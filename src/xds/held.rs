//! What a proxy holds, compared with what it should have, without a per-connection copy of
//! either. A connection remembers the shared map its last response of a type was computed from;
//! the proxy holds each resource of that map its subscription covers. A new map is compared with
//! that one in a single merge walk over both (they are sorted by name): resources the new
//! revision reused are the same `Arc`, so their contents need no comparison, and only changed
//! ones are collected.

use std::sync::Arc;

use super::resource::MapChange;
use super::subscription::Subscription;
use super::{Resource, ResourceMap};
use crate::sorted::{Side, merge_join};

/// One name of the merge walk of an old and a new map.
enum Step<'o, 'n> {
    Both(&'o Arc<Resource>, &'n Arc<Resource>),
    Old(&'o str),
    New(&'n Arc<Resource>),
}

/// Calls `f` for every name of `old` and `new`, in name order.
fn walk<'o, 'n>(old: &'o ResourceMap, new: &'n ResourceMap, mut f: impl FnMut(Step<'o, 'n>)) {
    merge_join(old, new, |side| {
        f(match side {
            Side::Both(x, y) => Step::Both(x, y),
            Side::Old(name, _) => Step::Old(name),
            Side::New(_, r) => Step::New(r),
        })
    });
}

/// Same content: the same `Arc` (the common case, decided without reading either), else
/// equal hashes.
pub(crate) fn same(a: &Arc<Resource>, b: &Arc<Resource>) -> bool {
    Arc::ptr_eq(a, b) || a.hash == b.hash
}

/// How a proxy's holdings differ from what it wants.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// Wanted resources not held at their current content, in name order.
    pub send: Vec<Arc<Resource>>,
    /// Held and still wanted, but gone from the new map.
    pub gone: Vec<String>,
    /// The two maps have the same names (contents may differ).
    pub same_names: bool,
}

/// Compares what the proxy holds — the resources of `sent` that `held_by` covers — with what it
/// wants: the resources of `map` that `wanted_by` covers. The two subscriptions differ only
/// while a delta request changes it.
pub(crate) fn changes(
    sent: &ResourceMap,
    map: &ResourceMap,
    held_by: &Subscription,
    wanted_by: &Subscription,
    hint: Option<&MapChange>,
) -> Changes {
    let mut out = Changes {
        same_names: sent.len() == map.len(),
        ..Changes::default()
    };
    // The builder of `map` says which names differ from `sent`: every other is the same `Arc`
    // in both, and, the subscription being unchanged, needs nothing.
    if let Some(hint) = hint
        && std::ptr::eq(&*hint.from, sent)
        && std::ptr::eq(&*hint.to, map)
        && std::ptr::eq(held_by, wanted_by)
    {
        out.same_names = true;
        for step in looked_up(sent, map, hint.names.iter().map(String::as_str)) {
            record(&mut out, step, held_by, wanted_by);
        }
        return out;
    }
    // A few named resources of a large map: look them up rather than walk it.
    let small = |s: &Subscription| !s.wildcard && s.name_count() * 8 < sent.len().max(map.len());
    if small(held_by) && small(wanted_by) {
        out.same_names = false;
        let mut names: Vec<&str> = held_by.names().chain(wanted_by.names()).collect();
        names.sort_unstable();
        names.dedup();
        for step in looked_up(sent, map, names) {
            record(&mut out, step, held_by, wanted_by);
        }
        return out;
    }
    walk(sent, map, |step| record(&mut out, step, held_by, wanted_by));
    out
}

/// The steps of [`walk`] for these names only, found by lookup.
fn looked_up<'o, 'n, 'a>(
    old: &'o ResourceMap,
    new: &'n ResourceMap,
    names: impl IntoIterator<Item = &'a str>,
) -> impl Iterator<Item = Step<'o, 'n>> {
    names
        .into_iter()
        .filter_map(move |name| match (old.get_key_value(name), new.get(name)) {
            (Some((_, x)), Some(y)) => Some(Step::Both(x, y)),
            (Some((name, _)), None) => Some(Step::Old(name)),
            (None, Some(y)) => Some(Step::New(y)),
            (None, None) => None,
        })
}

fn record(out: &mut Changes, step: Step<'_, '_>, held_by: &Subscription, wanted_by: &Subscription) {
    match step {
        Step::Both(old, new) => {
            if wanted_by.covers(&new.name) && !(held_by.covers(&new.name) && same(old, new)) {
                out.send.push(Arc::clone(new));
            }
        }
        Step::Old(name) => {
            out.same_names = false;
            if held_by.covers(name) && wanted_by.covers(name) {
                out.gone.push(name.to_string());
            }
        }
        Step::New(new) => {
            out.same_names = false;
            if wanted_by.covers(&new.name) {
                out.send.push(Arc::clone(new));
            }
        }
    }
}

/// The resources of `map` the subscription selects, in name order.
pub(crate) fn selected<'a>(
    map: &'a Arc<ResourceMap>,
    sub: &Subscription,
) -> Vec<&'a Arc<Resource>> {
    if sub.is_all_of(map) {
        map.values().collect()
    } else {
        sub.names().filter_map(|n| map.get(n)).collect()
    }
}

/// How many resources of `map` the subscription selects.
pub(crate) fn count_selected(map: &Arc<ResourceMap>, sub: &Subscription) -> usize {
    if sub.is_all_of(map) {
        map.len()
    } else {
        sub.names().filter(|n| map.contains_key(*n)).count()
    }
}

/// The resources of `map` the subscription selects that the proxy does not hold by name
/// (new to it), in one walk.
pub(crate) fn added<'a>(
    sent: &ResourceMap,
    map: &'a ResourceMap,
    sub: &Subscription,
) -> Vec<&'a Arc<Resource>> {
    let mut out = Vec::new();
    walk(sent, map, |step| {
        if let Step::New(new) = step
            && sub.covers(&new.name)
        {
            out.push(new);
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::tests::cla;

    fn map(items: &[(&str, usize)]) -> ResourceMap {
        items
            .iter()
            .map(|(n, v)| (n.to_string(), cla(n, *v)))
            .collect()
    }

    fn names(rs: &[Arc<Resource>]) -> Vec<&str> {
        rs.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn walk_finds_changed_added_and_gone() {
        let sent = map(&[("a", 1), ("b", 1), ("c", 1)]);
        let new = map(&[("a", 1), ("b", 2), ("d", 1)]);
        let mut all = Subscription::default();
        all.wildcard = true;
        let ch = changes(&sent, &new, &all, &all, None);
        assert_eq!(names(&ch.send), ["b", "d"]);
        assert_eq!(ch.gone, ["c"]);
        assert!(!ch.same_names);
        let ch = changes(&sent, &sent, &all, &all, None);
        assert!(ch.send.is_empty() && ch.gone.is_empty() && ch.same_names);
    }

    #[test]
    fn a_hint_names_what_changed_and_is_used_only_for_its_maps() {
        let sent = Arc::new(map(&[("a", 1), ("b", 1), ("c", 1), ("e", 1)]));
        let mut next = (*sent).clone();
        next.insert("b".into(), cla("b", 2));
        next.remove("c");
        next.insert("d".into(), cla("d", 1));
        let next = Arc::new(next);
        let mut some = Subscription::default();
        some.subscribe(vec!["b".into(), "c".into(), "d".into(), "e".into()], &sent);
        let hint = MapChange {
            from: sent.clone(),
            to: next.clone(),
            names: vec!["b".into(), "c".into(), "d".into()],
        };
        let hinted = changes(&sent, &next, &some, &some, Some(&hint));
        let walked = changes(&sent, &next, &some, &some, None);
        assert_eq!(names(&hinted.send), ["b", "d"]);
        assert_eq!(
            (names(&hinted.send), &hinted.gone, hinted.same_names),
            (names(&walked.send), &walked.gone, walked.same_names)
        );

        // A hint about other maps is not believed: "e" changed too.
        let mut other = (*next).clone();
        other.insert("e".into(), cla("e", 2));
        let ch = changes(&sent, &other, &some, &some, Some(&hint));
        assert_eq!(names(&ch.send), ["b", "d", "e"]);
    }

    #[test]
    fn newly_wanted_names_are_sent_even_if_unchanged() {
        let sent = Arc::new(map(&[("a", 1), ("b", 1)]));
        let mut old = Subscription::default();
        old.subscribe(vec!["a".into()], &sent);
        let mut new = old.clone();
        new.subscribe(vec!["b".into()], &sent);
        let ch = changes(&sent, &sent, &old, &new, None);
        assert_eq!(names(&ch.send), ["b"]);
        let more = map(&[("a", 1), ("b", 1), ("c", 1)]);
        let mut all = Subscription::default();
        all.wildcard = true;
        assert_eq!(
            added(&sent, &more, &all)
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>(),
            ["c"]
        );
    }
}
