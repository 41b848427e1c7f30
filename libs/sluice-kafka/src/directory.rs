//! Which topics exist, answered without a Kafka round trip per question.
//!
//! Both services answer "is there such a stream?" on every request, floods of names that do not
//! exist included. Asking Kafka about each name would turn such a flood into a broker storm, and
//! remembering each unknown name would grow memory without bound. So the directory holds the
//! cluster's list of topic names (one metadata request lists them all) and refreshes it on
//! demand: a name on the list is trusted for [`KNOWN_TTL`]; a name missing from a list younger
//! than [`MISSING_TTL`] is unknown. Whatever names are asked, Kafka sees at most one listing per
//! [`MISSING_TTL`] (one refresh at a time; the others wait for it and share its answer), and
//! memory holds only the names of topics that exist.
//!
//! A listing that fails is remembered for [`FAILURE_TTL`], so a flood while Kafka is down does
//! not queue one metadata timeout behind another.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rdkafka::error::KafkaResult;
use rdkafka::metadata::Metadata;

use crate::KafkaError;

/// How long a topic seen on the list is trusted to exist.
pub const KNOWN_TTL: Duration = Duration::from_secs(60);
/// How long a name missing from the list is taken not to exist (how soon a topic created
/// elsewhere shows up).
pub const MISSING_TTL: Duration = Duration::from_secs(5);
/// How long a failed listing is answered without asking again.
pub const FAILURE_TTL: Duration = Duration::from_secs(1);

/// A blocking call listing the names of every topic, usually
/// `existing_topics(client.fetch_metadata(None, timeout))` of any client.
pub type ListTopics = Arc<dyn Fn() -> Result<Vec<String>, KafkaError> + Send + Sync>;

/// The names of the topics in a metadata answer that exist and have partitions.
pub fn existing_topics(metadata: KafkaResult<Metadata>) -> Result<Vec<String>, KafkaError> {
    Ok(metadata
        .map_err(KafkaError::Kafka)?
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.name().to_owned())
        .collect())
}

#[derive(Debug)]
enum Snapshot {
    Listed { at: Instant, topics: HashSet<String> },
    Failed { at: Instant, reason: String },
}

/// The cached list of topics. See the module documentation.
pub struct TopicDirectory {
    list: ListTopics,
    snapshot: RwLock<Option<Snapshot>>,
    refresh: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for TopicDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicDirectory").finish_non_exhaustive()
    }
}

impl TopicDirectory {
    pub fn new(list: ListTopics) -> Self {
        Self {
            list,
            snapshot: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether `topic` exists; an error when Kafka cannot list its topics.
    pub async fn exists(&self, topic: &str) -> Result<bool, KafkaError> {
        if let Some(answer) = self.cached(topic) {
            return answer;
        }
        let _refreshing = self.refresh.lock().await;
        // Whoever held the lock before may have just answered the question.
        if let Some(answer) = self.cached(topic) {
            return answer;
        }
        let list = self.list.clone();
        let listed = tokio::task::spawn_blocking(move || list())
            .await
            .map_err(|e| KafkaError::Task(e.to_string()))?;
        let at = Instant::now();
        let snapshot = match listed {
            Ok(names) => Snapshot::Listed {
                at,
                topics: names.into_iter().collect(),
            },
            Err(err) => Snapshot::Failed {
                at,
                reason: err.to_string(),
            },
        };
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Some(snapshot);
        self.cached(topic)
            .unwrap_or_else(|| Err(KafkaError::Task("the topic list expired at once".into())))
    }

    /// Records a topic this process has just created, so the next question does not wait for
    /// the next listing.
    pub fn insert(&self, topic: &str) {
        if let Some(Snapshot::Listed { topics, .. }) = &mut *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) {
            topics.insert(topic.to_owned());
        }
    }

    fn cached(&self, topic: &str) -> Option<Result<bool, KafkaError>> {
        let snapshot = self.snapshot.read().unwrap_or_else(|e| e.into_inner());
        match snapshot.as_ref()? {
            Snapshot::Listed { at, topics } if topics.contains(topic) => (at.elapsed() < KNOWN_TTL).then_some(Ok(true)),
            Snapshot::Listed { at, .. } => (at.elapsed() < MISSING_TTL).then_some(Ok(false)),
            Snapshot::Failed { at, reason } => {
                (at.elapsed() < FAILURE_TTL).then(|| Err(KafkaError::Task(format!("cannot list topics: {reason}"))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use super::*;

    fn directory(topics: &[&str]) -> (TopicDirectory, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let names = Arc::new(Mutex::new(topics.iter().map(|t| t.to_string()).collect::<Vec<_>>()));
        let (counter, listed) = (calls.clone(), names.clone());
        let list: ListTopics = Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(listed.lock().unwrap().clone())
        });
        (TopicDirectory::new(list), calls, names)
    }

    #[tokio::test]
    async fn a_flood_of_unknown_names_costs_one_listing() {
        let (directory, calls, _) = directory(&["orders"]);
        for n in 0..10_000 {
            assert!(!directory.exists(&format!("nope-{n}")).await.unwrap());
        }
        assert!(directory.exists("orders").await.unwrap());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let held = match &*directory.snapshot.read().unwrap() {
            Some(Snapshot::Listed { topics, .. }) => topics.len(),
            _ => 0,
        };
        assert_eq!(held, 1, "unknown names are not remembered");
    }

    #[tokio::test]
    async fn a_new_topic_shows_up_after_the_missing_ttl() {
        let (directory, calls, names) = directory(&[]);
        assert!(!directory.exists("late").await.unwrap());
        names.lock().unwrap().push("late".into());
        assert!(!directory.exists("late").await.unwrap(), "still within the missing TTL");
        // Age the snapshot instead of waiting.
        if let Some(Snapshot::Listed { at, .. }) = &mut *directory.snapshot.write().unwrap() {
            *at -= MISSING_TTL;
        }
        assert!(directory.exists("late").await.unwrap());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn inserted_topics_exist_at_once_and_failures_are_not_retried_per_request() {
        let (directory, _, _) = directory(&[]);
        assert!(!directory.exists("made").await.unwrap());
        directory.insert("made");
        assert!(directory.exists("made").await.unwrap());

        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let failing = TopicDirectory::new(Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            Err(KafkaError::Task("down".into()))
        }));
        for n in 0..100 {
            assert!(failing.exists(&format!("t{n}")).await.is_err());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
