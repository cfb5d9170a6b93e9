//! `dig`, run in a namespace and read: the status and the answer section.

use std::time::Duration;

use crate::netns::Netns;

/// What one `dig` run printed, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigReply {
    /// `NOERROR`, `NXDOMAIN`, `REFUSED`, … or `no answer` when nothing answered.
    pub status: String,
    /// The lines of the answer section.
    pub answers: Vec<String>,
    /// Everything dig printed.
    pub text: String,
}

impl DigReply {
    pub fn parse(text: &str) -> DigReply {
        let status = text
            .split("status: ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .unwrap_or("no answer")
            .to_owned();
        let answers = text
            .lines()
            .skip_while(|l| !l.starts_with(";; ANSWER SECTION:"))
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect();
        DigReply {
            status,
            answers,
            text: text.to_owned(),
        }
    }

    /// The data of each answer: see [`dig_values`].
    pub fn values(&self) -> Vec<String> {
        dig_values(&self.answers)
    }
}

/// The data of each answer line (the fifth field: an address, a quoted TXT string, a name).
pub fn dig_values(answers: &[String]) -> Vec<String> {
    answers
        .iter()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_owned))
        .collect()
}

impl Netns {
    /// `dig ARGS…` in the namespace, read; a dig that got no reply is `no answer`, not an error.
    pub fn dig(&self, args: &[&str]) -> anyhow::Result<DigReply> {
        let output = self.exec_unchecked("dig", args, Duration::from_secs(30))?;
        Ok(DigReply::parse(&String::from_utf8_lossy(&output.stdout)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_read_and_silence_is_no_answer() {
        let text = ";; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 1\n\
                    ;; ANSWER SECTION:\n\
                    whereami.lab.\t60\tIN\tTXT\t\"NETWORK1\"\n\
                    \n\
                    ;; Query time: 0 msec\n";
        let reply = DigReply::parse(text);
        assert_eq!(reply.status, "NOERROR");
        assert_eq!(reply.values(), ["\"NETWORK1\""]);
        let silent = DigReply::parse(";; communications error: timed out\n");
        assert_eq!(silent.status, "no answer");
        assert!(silent.answers.is_empty());
    }
}
