//! CloudWatch PutMetricData on the wire: the query parameters, in batches AWS accepts. Pure
//! functions, no I/O. Invariant: no batch holds more than [`MAX_METRIC_DATA_PER_CALL`] data,
//! and no batch holds a value CloudWatch rejects (NaN, infinities), so one bad value cannot
//! lose the others.

/// One CloudWatch data point.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricDatum {
    pub name: String,
    pub value: f64,
    /// A CloudWatch unit: "Count", "Milliseconds", "None"...
    pub unit: String,
    pub dimensions: Vec<(String, String)>,
}

/// Most metric data one PutMetricData call may carry.
pub const MAX_METRIC_DATA_PER_CALL: usize = 1000;

/// The parameters of the PutMetricData calls that send `data` to `namespace`: one list per
/// call, data numbered `MetricData.member.N` from 1 in each. Non-finite values are left out.
pub(crate) fn put_metric_data_batches(
    namespace: &str,
    data: &[MetricDatum],
) -> Vec<Vec<(String, String)>> {
    let finite: Vec<&MetricDatum> = data
        .iter()
        .filter(|datum| {
            let keep = datum.value.is_finite();
            if !keep {
                tracing::warn!(
                    metric = %datum.name,
                    value = datum.value,
                    "CloudWatch takes no NaN or infinite values; datum left out"
                );
            }
            keep
        })
        .collect();
    finite
        .chunks(MAX_METRIC_DATA_PER_CALL)
        .map(|batch| put_metric_data_params(namespace, batch))
        .collect()
}

fn put_metric_data_params(namespace: &str, batch: &[&MetricDatum]) -> Vec<(String, String)> {
    let mut params = vec![("Namespace".to_owned(), namespace.to_owned())];
    for (index, datum) in batch.iter().enumerate() {
        let member = format!("MetricData.member.{}", index + 1);
        params.push((format!("{member}.MetricName"), datum.name.clone()));
        // Rust prints f64 without exponent and with the shortest exact digits.
        params.push((format!("{member}.Value"), datum.value.to_string()));
        params.push((format!("{member}.Unit"), datum.unit.clone()));
        for (dimension_index, (name, value)) in datum.dimensions.iter().enumerate() {
            let dimension = format!("{member}.Dimensions.member.{}", dimension_index + 1);
            params.push((format!("{dimension}.Name"), name.clone()));
            params.push((format!("{dimension}.Value"), value.clone()));
        }
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datum(name: &str, value: f64, dimensions: &[(&str, &str)]) -> MetricDatum {
        MetricDatum {
            name: name.to_owned(),
            value,
            unit: "Count".to_owned(),
            dimensions: dimensions
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn encodes_names_values_units_and_dimensions() {
        let data = [
            datum("Failovers", 1.0, &[("Site", "north"), ("Uplink", "lte0")]),
            MetricDatum {
                unit: "Milliseconds".to_owned(),
                ..datum("ProbeRtt", 12.5, &[])
            },
        ];
        let batches = put_metric_data_batches("Fieldnet/Hub", &data);
        assert_eq!(batches.len(), 1);
        let expected = [
            ("Namespace", "Fieldnet/Hub"),
            ("MetricData.member.1.MetricName", "Failovers"),
            ("MetricData.member.1.Value", "1"),
            ("MetricData.member.1.Unit", "Count"),
            ("MetricData.member.1.Dimensions.member.1.Name", "Site"),
            ("MetricData.member.1.Dimensions.member.1.Value", "north"),
            ("MetricData.member.1.Dimensions.member.2.Name", "Uplink"),
            ("MetricData.member.1.Dimensions.member.2.Value", "lte0"),
            ("MetricData.member.2.MetricName", "ProbeRtt"),
            ("MetricData.member.2.Value", "12.5"),
            ("MetricData.member.2.Unit", "Milliseconds"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        assert_eq!(batches[0], expected);
    }

    #[test]
    fn splits_more_than_a_thousand_data() {
        let data: Vec<MetricDatum> = (0..2500)
            .map(|index| datum(&format!("m{index}"), f64::from(index), &[]))
            .collect();
        let batches = put_metric_data_batches("ns", &data);
        let sizes: Vec<usize> = batches
            .iter()
            .map(|params| (params.len() - 1) / 3)
            .collect();
        assert_eq!(sizes, [1000, 1000, 500]);
        for batch in &batches {
            assert_eq!(batch[0], ("Namespace".to_owned(), "ns".to_owned()));
        }
        let value_of = |batch: &[(String, String)], name: &str| {
            batch
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        };
        assert_eq!(
            value_of(&batches[1], "MetricData.member.1.MetricName").as_deref(),
            Some("m1000")
        );
        assert_eq!(
            value_of(&batches[1], "MetricData.member.1000.MetricName").as_deref(),
            Some("m1999")
        );
        assert_eq!(
            value_of(&batches[1], "MetricData.member.1001.MetricName"),
            None
        );
        assert_eq!(
            value_of(&batches[2], "MetricData.member.500.MetricName").as_deref(),
            Some("m2499")
        );
    }

    #[test]
    fn exactly_a_thousand_is_one_call_and_none_is_no_call() {
        let data: Vec<MetricDatum> = (0..1000).map(|_| datum("m", 0.0, &[])).collect();
        assert_eq!(put_metric_data_batches("ns", &data).len(), 1);
        assert!(put_metric_data_batches("ns", &[]).is_empty());
    }

    #[test]
    fn leaves_out_values_cloudwatch_rejects() {
        let data = [
            datum("nan", f64::NAN, &[]),
            datum("ok", 0.25, &[]),
            datum("inf", f64::INFINITY, &[]),
        ];
        let batches = put_metric_data_batches("ns", &data);
        assert_eq!(batches.len(), 1);
        assert_eq!(
            batches[0][1],
            ("MetricData.member.1.MetricName".to_owned(), "ok".to_owned())
        );
        assert_eq!(batches[0].len(), 4);
        assert!(put_metric_data_batches("ns", &[datum("nan", f64::NAN, &[])]).is_empty());
    }
}
