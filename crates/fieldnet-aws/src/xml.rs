//! Navigation of AWS XML responses by local element names. Invariant: namespaces are ignored,
//! since EC2, the query services and Route53 each put their own (or none) on the same shapes.

use roxmltree::Node;

/// The element children of `node` whose local name is `name`.
pub(crate) fn children<'a, 'input: 'a>(
    node: Node<'a, 'input>,
    name: &'a str,
) -> impl Iterator<Item = Node<'a, 'input>> + 'a {
    node.children()
        .filter(move |child| child.is_element() && child.tag_name().name() == name)
}

/// The first element child of `node` whose local name is `name`.
pub(crate) fn child<'a, 'input: 'a>(
    node: Node<'a, 'input>,
    name: &'a str,
) -> Option<Node<'a, 'input>> {
    children(node, name).next()
}

/// The first element below `node` (at any depth, `node` included) whose local name is `name`.
pub(crate) fn descendant<'a, 'input: 'a>(
    node: Node<'a, 'input>,
    name: &str,
) -> Option<Node<'a, 'input>> {
    node.descendants()
        .find(|found| found.is_element() && found.tag_name().name() == name)
}

/// The trimmed text of `node`'s child `name`; `None` when it is missing or empty.
pub(crate) fn child_text(node: Node<'_, '_>, name: &str) -> Option<String> {
    child(node, name).and_then(text)
}

/// The trimmed text content of an element; `None` when empty.
pub(crate) fn text(node: Node<'_, '_>) -> Option<String> {
    let text: String = node
        .descendants()
        .filter(|part| part.is_text())
        .filter_map(|part| part.text())
        .collect();
    let trimmed = text.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}
