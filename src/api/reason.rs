//! The kubelet's reasons for a container that is not running (`state.waiting.reason`), one
//! home for their spelling: what decides a wait names a [`Reason`], and the v1 status gets
//! its text from [`Reason::as_str`].

use std::fmt;

/// Why a container waits (pkg/kubelet/container's and pkg/kubelet/images' reasons).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Being made: the sandbox, the image, the rootfs (the default for a new container).
    ContainerCreating,
    /// An app container behind init containers that have not all finished.
    PodInitializing,
    /// Ended, and its restart waits out the back-off.
    CrashLoopBackOff,
    /// The image's pull failed.
    ErrImagePull,
    /// The image's pull failed and is backing off before the next try.
    ImagePullBackOff,
    /// The image is not on the node and its pull policy is Never.
    ErrImageNeverPull,
    /// The local image store could not say whether the image is there.
    ErrImageInspect,
    /// Its configuration (env, volumes, user, security context) cannot be made.
    CreateContainerConfigError,
    /// The runtime refused to create it.
    CreateContainerError,
    /// The runtime created it but could not start it (or failed otherwise).
    RunContainerError,
}

impl Reason {
    /// The text of `state.waiting.reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ContainerCreating => "ContainerCreating",
            Reason::PodInitializing => "PodInitializing",
            Reason::CrashLoopBackOff => "CrashLoopBackOff",
            Reason::ErrImagePull => "ErrImagePull",
            Reason::ImagePullBackOff => "ImagePullBackOff",
            Reason::ErrImageNeverPull => "ErrImageNeverPull",
            Reason::ErrImageInspect => "ErrImageInspect",
            Reason::CreateContainerConfigError => "CreateContainerConfigError",
            Reason::CreateContainerError => "CreateContainerError",
            Reason::RunContainerError => "RunContainerError",
        }
    }

    /// Whether the image is what the container waits for.
    pub fn is_image(self) -> bool {
        matches!(
            self,
            Reason::ErrImagePull
                | Reason::ImagePullBackOff
                | Reason::ErrImageNeverPull
                | Reason::ErrImageInspect
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spelt_as_the_kubelet() {
        for (r, text, image) in [
            (Reason::ContainerCreating, "ContainerCreating", false),
            (Reason::PodInitializing, "PodInitializing", false),
            (Reason::CrashLoopBackOff, "CrashLoopBackOff", false),
            (Reason::ErrImagePull, "ErrImagePull", true),
            (Reason::ImagePullBackOff, "ImagePullBackOff", true),
            (Reason::ErrImageNeverPull, "ErrImageNeverPull", true),
            (Reason::ErrImageInspect, "ErrImageInspect", true),
            (
                Reason::CreateContainerConfigError,
                "CreateContainerConfigError",
                false,
            ),
            (Reason::CreateContainerError, "CreateContainerError", false),
            (Reason::RunContainerError, "RunContainerError", false),
        ] {
            assert_eq!((r.as_str(), r.to_string().as_str()), (text, text));
            assert_eq!(r.is_image(), image, "{r}");
        }
    }
}
