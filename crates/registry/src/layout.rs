//! Where the registry's keys are, under the deployment's key prefix.

/// The registry's names in Redis.
#[derive(Debug, Clone)]
pub struct Layout {
    prefix: String,
}

impl Layout {
    /// The layout under `prefix` (`kv.redis.key_prefix`: `gateway` unless set).
    pub fn new(prefix: &str) -> Layout {
        Layout {
            prefix: prefix.to_owned(),
        }
    }

    /// `<service>/<host>:<port>`: one instance, as the index and the messages name it.
    pub fn member(service: &str, authority: &str) -> String {
        format!("{service}/{authority}")
    }

    /// The service a member names, and the rest: `None` for a name with no `/`.
    pub fn split(member: &str) -> Option<(&str, &str)> {
        member.split_once('/')
    }

    /// The key holding one instance's registration.
    pub fn instance_key(&self, member: &str) -> String {
        format!("{}:registry:instance:{member}", self.prefix)
    }

    /// The set of every registered member.
    pub fn index_key(&self) -> String {
        format!("{}:registry:instances", self.prefix)
    }

    /// A key that exists as long as Redis kept its data.
    pub fn marker_key(&self) -> String {
        format!("{}:registry:marker", self.prefix)
    }

    /// The channel changes are published on.
    pub fn channel(&self) -> String {
        format!("{}:registry:changes", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_under_the_prefix_and_name_the_member() {
        let layout = Layout::new("gateway");
        let member = Layout::member("orders", "10.0.0.5:8080");
        assert_eq!(member, "orders/10.0.0.5:8080");
        assert_eq!(
            layout.instance_key(&member),
            "gateway:registry:instance:orders/10.0.0.5:8080"
        );
        assert_eq!(layout.index_key(), "gateway:registry:instances");
        assert_eq!(layout.channel(), "gateway:registry:changes");
        assert_eq!(
            Layout::split("orders/[::1]:80"),
            Some(("orders", "[::1]:80"))
        );
        assert_eq!(Layout::split("orders"), None);
    }
}
