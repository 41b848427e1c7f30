//! An in-process Kafka-protocol broker: librdkafka's mock cluster.
//!
//! It listens on loopback TCP ports and speaks the real Kafka protocol, so any client in any
//! process can use it, and it can inject faults (brokers down). It cannot answer
//! offsets-by-timestamp or CreateTopics, and it creates an unknown topic (librdkafka's default
//! of 4 partitions) when a client asks for it with auto-creation allowed, which Sluice's clients
//! never do; [`EmbeddedBroker::topic_creator`] is how Sluice creates topics on it. Data lives in
//! memory only.
//!
//! librdkafka's handle is not `Send`, so the cluster lives on a thread of its own and this type
//! talks to it over a channel; that makes [`EmbeddedBroker`] usable from any task or thread.

use std::sync::mpsc;
use std::thread::JoinHandle;

use rdkafka::mocking::MockCluster;

use crate::create::{CreateFuture, TopicCreator};
use crate::KafkaError;

enum Command {
    CreateTopic {
        name: String,
        partitions: i32,
        reply: mpsc::Sender<Result<(), KafkaError>>,
    },
    SetBrokersUp {
        up: bool,
        reply: mpsc::Sender<Result<(), KafkaError>>,
    },
    /// Ends the thread even while [`EmbeddedTopicCreator`]s still hold senders.
    Stop,
}

/// A running in-process broker. Dropping it stops the broker.
#[derive(Debug)]
pub struct EmbeddedBroker {
    bootstrap: String,
    commands: Option<mpsc::Sender<Command>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Starts a cluster of `brokers` brokers on loopback ports chosen by the OS.
    pub fn start(brokers: i32) -> Result<Self, KafkaError> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (commands, command_rx) = mpsc::channel::<Command>();
        let thread = std::thread::Builder::new()
            .name("embedded-kafka".into())
            .spawn(move || {
                let cluster = match MockCluster::new(brokers) {
                    Ok(cluster) => cluster,
                    Err(err) => {
                        let _ = ready_tx.send(Err(KafkaError::Kafka(err)));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                // Runs until every sender is dropped, then drops (stops) the cluster.
                for command in command_rx {
                    match command {
                        Command::CreateTopic {
                            name,
                            partitions,
                            reply,
                        } => {
                            let result = cluster.create_topic(&name, partitions, 1).map_err(KafkaError::Kafka);
                            let _ = reply.send(result);
                        }
                        Command::SetBrokersUp { up, reply } => {
                            // -1 addresses every broker of the cluster.
                            let result = if up {
                                cluster.broker_up(-1)
                            } else {
                                cluster.broker_down(-1)
                            };
                            let _ = reply.send(result.map_err(KafkaError::Kafka));
                        }
                        Command::Stop => break,
                    }
                }
            })
            .map_err(|e| KafkaError::Task(format!("cannot start the embedded broker thread: {e}")))?;
        let bootstrap = ready_rx
            .recv()
            .map_err(|_| KafkaError::Task("the embedded broker thread exited at start".into()))??;
        Ok(Self {
            bootstrap,
            commands: Some(commands),
            thread: Some(thread),
        })
    }

    /// `host:port[,host:port…]` for clients' `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Creates a topic with `partitions` partitions (the mock cluster cannot serve CreateTopics).
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), KafkaError> {
        self.call(|reply| Command::CreateTopic {
            name: name.to_owned(),
            partitions,
            reply,
        })
    }

    /// A [`TopicCreator`] backed by this broker, for services that create topics on purpose
    /// (ingest's `--auto-create-streams` in the dev stack). It fails once the broker has stopped.
    pub fn topic_creator(&self) -> EmbeddedTopicCreator {
        EmbeddedTopicCreator {
            commands: self.commands.clone(),
        }
    }

    /// Makes every broker refuse connections (`false`) or accept them again (`true`).
    pub fn set_brokers_up(&self, up: bool) -> Result<(), KafkaError> {
        self.call(|reply| Command::SetBrokersUp { up, reply })
    }

    fn call(&self, command: impl FnOnce(mpsc::Sender<Result<(), KafkaError>>) -> Command) -> Result<(), KafkaError> {
        call(self.commands.as_ref(), command)
    }
}

fn call(
    commands: Option<&mpsc::Sender<Command>>,
    command: impl FnOnce(mpsc::Sender<Result<(), KafkaError>>) -> Command,
) -> Result<(), KafkaError> {
    let gone = || KafkaError::Task("the embedded broker has stopped".into());
    let (reply, response) = mpsc::channel();
    commands.ok_or_else(gone)?.send(command(reply)).map_err(|_| gone())?;
    response.recv().map_err(|_| gone())?
}

/// Creates topics on an [`EmbeddedBroker`] (see [`EmbeddedBroker::topic_creator`]).
#[derive(Debug, Clone)]
pub struct EmbeddedTopicCreator {
    commands: Option<mpsc::Sender<Command>>,
}

impl TopicCreator for EmbeddedTopicCreator {
    fn create_topic<'a>(&'a self, topic: &'a str, partitions: i32) -> CreateFuture<'a> {
        let (commands, name) = (self.commands.clone(), topic.to_owned());
        Box::pin(async move {
            let created = tokio::task::spawn_blocking(move || {
                call(commands.as_ref(), |reply| Command::CreateTopic {
                    name,
                    partitions,
                    reply,
                })
            })
            .await
            .map_err(|e| KafkaError::Task(e.to_string()))?;
            match created {
                Err(KafkaError::Kafka(rdkafka::error::KafkaError::MockCluster(
                    rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
                ))) => Ok(()),
                other => other,
            }
        })
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        // Ending the thread's loop drops the cluster; creators may still hold senders, so the
        // channel closing is not enough.
        if let Some(commands) = self.commands.take() {
            let _ = commands.send(Command::Stop);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
