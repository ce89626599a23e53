//! The children of a release, by kind: what it should have (build) and what it has (apply). Plain
//! data, generated from the one list of kinds ([`crate::kinds`]): a kind added there is a field
//! here.

use kube::Resource;

macro_rules! children {
    ($($field:ident: $kind:ty => $policy:ident),* $(,)?) => {
        /// Every child of one release, by kind, in the order they are applied.
        #[derive(Clone, Debug, Default, PartialEq)]
        pub struct Children {
            $(pub $field: Vec<$kind>,)*
        }

        impl Children {
            /// How many children of each kind, by kind name, in apply order.
            pub fn counts(&self) -> Vec<(String, usize)> {
                vec![$((<$kind as Resource>::kind(&()).into_owned(), self.$field.len()),)*]
            }

            /// Every child's name, in apply order.
            pub fn names(&self) -> Vec<String> {
                let mut names = Vec::new();
                $(names.extend(self.$field.iter().map(|c| c.meta().name.clone().unwrap_or_default()));)*
                names
            }

            /// Every child as the API server would return it untyped, with its kind, in apply
            /// order: what the readers outside the reconcile get ([`super::traffic::applied_split`]).
            #[cfg(test)]
            pub fn dynamic(&self) -> Vec<kube::api::DynamicObject> {
                let mut all = Vec::new();
                $(
                    for child in &self.$field {
                        let mut value = serde_json::to_value(child).unwrap_or_default();
                        value["apiVersion"] = <$kind as Resource>::api_version(&()).into();
                        value["kind"] = <$kind as Resource>::kind(&()).into();
                        if let Ok(object) = serde_json::from_value(value) {
                            all.push(object);
                        }
                    }
                )*
                all
            }
        }
    };
}
crate::with_child_kinds!(children);
