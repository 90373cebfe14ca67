//! The federation as this node currently knows it: the verified directory, the agreements and
//! their pseudonym keys, held together in one immutable snapshot that the node swaps whole
//! ([`crate::node::Node::replace_federation`]). Readers take a snapshot and keep to it for one
//! request, so a request never sees the directory of one version and the agreements of another.
//! No I/O here.

use std::collections::HashMap;

use interflow_core::RegionCode;
use interflow_core::accept::AcceptContext;
use interflow_core::agreement::AgreementSet;
use interflow_core::directory::Directory;
use interflow_core::payload::ValidationRules;
use interflow_core::pseudonym::EpochKeys;

/// One consistent view of the federation.
pub struct Federation {
    pub directory: Directory,
    pub agreements: AgreementSet,
    /// Each agreement's pseudonym keys by epoch (new records use the newest).
    pub pseudonym_keys: HashMap<String, EpochKeys>,
}

impl std::fmt::Debug for Federation {
    // Pseudonym keys are secrets: only their agreement ids and epochs are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federation")
            .field("directory", &self.directory)
            .field("agreements", &self.agreements)
            .field(
                "pseudonym_keys",
                &self.pseudonym_keys.iter().collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Federation {
    /// The peers this node exchanges with: partners under some agreement that are members of
    /// the directory. A partner the directory no longer lists gets no delivery worker.
    pub fn peers(&self, me: RegionCode) -> Vec<RegionCode> {
        self.agreements
            .all_peers(me)
            .into_iter()
            .filter(|p| self.directory.member(*p).is_some())
            .collect()
    }

    /// What the acceptance rule checks a received record against.
    pub fn accept_context(&self, rules: ValidationRules) -> AcceptContext<'_> {
        AcceptContext {
            directory: &self.directory,
            agreements: &self.agreements,
            rules,
        }
    }
}
