//! The runtime's images in the node status (upstream `Images`).

use k8s_openapi::api::core::v1::{ContainerImage, Node};

use super::status_mut;
use crate::nodestatus::NodeStatusInputs;

/// Upstream `MaxNamesPerImageInNodeStatus`.
pub const MAX_NAMES_PER_IMAGE: usize = 5;

/// The runtime's images, largest first (ties by id, as upstream's image manager sorts), at
/// most `max_images`, each with up to five names: digests then tags (upstream `Images`).
pub fn images(node: &mut Node, inputs: &NodeStatusInputs) {
    let mut list: Vec<_> = inputs.images.iter().collect();
    list.sort_by(|a, b| {
        b.size_bytes
            .cmp(&a.size_bytes)
            .then_with(|| b.id.cmp(&a.id))
    });
    if let Some(max) = inputs.max_images {
        list.truncate(max);
    }
    let images: Vec<ContainerImage> = list
        .into_iter()
        .map(|image| {
            let names: Vec<String> = image
                .repo_digests
                .iter()
                .chain(&image.repo_tags)
                .take(MAX_NAMES_PER_IMAGE)
                .cloned()
                .collect();
            ContainerImage {
                names: (!names.is_empty()).then_some(names),
                size_bytes: Some(i64::try_from(image.size_bytes).unwrap_or(i64::MAX)),
            }
        })
        .collect();
    status_mut(node).images = (!images.is_empty()).then_some(images);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodestatus::setters::fixtures::{apply, reference_inputs, status};
    use crate::nodestatus::ImageInfo;

    #[test]
    fn image_list_sorted_capped_and_named() {
        let image = |id: &str, size: u64, tags: &[&str], digests: &[&str]| ImageInfo {
            id: id.into(),
            repo_tags: tags.iter().map(|s| s.to_string()).collect(),
            repo_digests: digests.iter().map(|s| s.to_string()).collect(),
            size_bytes: size,
        };
        let mut inputs = reference_inputs();
        inputs.images = vec![
            image("a", 1997425, &[], &[]),
            image("b", 2130562, &["registry.k8s.io/pause:3.6"], &[]),
            image("c", 2130545, &["t1", "t2", "t3", "t4"], &["d1", "d2"]),
        ];
        let node = apply(images, &inputs);
        let got: Vec<_> = status(&node)
            .images
            .as_ref()
            .unwrap()
            .iter()
            .map(|i| (i.names.clone(), i.size_bytes))
            .collect();
        let names = |n: &[&str]| Some(n.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            got,
            vec![
                (names(&["registry.k8s.io/pause:3.6"]), Some(2130562)),
                (names(&["d1", "d2", "t1", "t2", "t3"]), Some(2130545)),
                (None, Some(1997425)),
            ]
        );
        inputs.max_images = Some(1);
        assert_eq!(
            status(&apply(images, &inputs))
                .images
                .as_ref()
                .unwrap()
                .len(),
            1
        );
        inputs.images.clear();
        assert_eq!(status(&apply(images, &inputs)).images, None);
    }
}
