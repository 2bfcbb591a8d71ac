//! istioctl's tables: Go's `tabwriter` with padding 5, as both `proxy-status` and
//! `proxy-config` print them, so scripts that cut istioctl's columns cut ours.

/// Go tabwriter's padding in istioctl's writers.
const PADDING: usize = 5;

/// Lines of cells laid out as Go's tabwriter does: each column but the last as wide as its
/// widest cell plus the padding; the last cell of a line is not padded.
pub fn render(lines: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for line in lines {
        for (i, cell) in line.iter().enumerate() {
            let len = cell.chars().count();
            match widths.get_mut(i) {
                Some(w) => *w = (*w).max(len),
                None => widths.push(len),
            }
        }
    }
    let mut out = String::new();
    for line in lines {
        for (i, cell) in line.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < line.len() {
                let pad = widths[i] + PADDING - cell.chars().count();
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}
