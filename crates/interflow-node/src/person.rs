//! A person as a search by national ID finds her: her subject ref under every agreement this
//! node is a party to and under every pseudonym epoch it keeps of each, and the union of her
//! records under those refs. `Admin.Lookup`, `Admin.Disclosure`, `Inbox.Match` and intake's
//! residence check all go through here, so each finds records made before and after a key
//! rotation. The national ID goes no further than [`person_refs`]; nothing here is stored.

use interflow_core::pseudonym::SubjectRef;
use interflow_core::record::DecodedRecord;
use interflow_core::{NationalId, RegionCode};
use interflow_store::{Store, StoreError};

use crate::federation::Federation;

/// One person under one agreement: her ref under each epoch kept, oldest first.
#[derive(Debug, Clone)]
pub struct PersonRefs {
    pub agreement: String,
    pub peer: RegionCode,
    pub refs: Vec<SubjectRef>,
}

/// The person's refs under each agreement of `fed` that `me` is a party to and has keys for.
pub fn person_refs(fed: &Federation, me: RegionCode, id: &NationalId) -> Vec<PersonRefs> {
    fed.agreements
        .iter()
        .filter_map(|a| {
            let keys = fed.pseudonym_keys.get(&a.id)?;
            Some(PersonRefs {
                agreement: a.id.clone(),
                peer: a.peer_of(me)?,
                refs: keys.refs(id).into_iter().map(|(_, r)| r).collect(),
            })
        })
        .collect()
}

/// Every record stored under any of `refs` (a record has one ref, so none appears twice).
pub fn records_of(store: &Store, refs: &[SubjectRef]) -> Result<Vec<DecodedRecord>, StoreError> {
    let mut out = Vec::new();
    for r in refs {
        out.extend(store.subject_records(r)?);
    }
    Ok(out)
}
