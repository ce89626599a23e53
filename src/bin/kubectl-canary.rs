//! `kubectl canary`: a kubectl plugin for CanaryRelease (kubectl runs `kubectl-canary` from PATH).
//! Parsing and exit statuses live here; the work is in `canary_operator::plugin`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use canary_operator::plugin::cluster::{self, ConnectOptions};
use canary_operator::plugin::sample::{self, Models, Plan};
use canary_operator::plugin::verify::{self, Agreement, Expectation};
use canary_operator::plugin::{Error, Output, duration, finalize, request, set_weight, status};
use canary_operator::rollout::Verb;
use clap::{Args, Parser, Subcommand};
use k8s_openapi::jiff::Timestamp;

/// kubectl's help layout: description, examples, options, usage.
const COMMAND_TEMPLATE: &str = "\
{about}{after-help}
{all-args}

Usage:
  {usage}
";

const ROOT_TEMPLATE: &str = "\
{about}

{all-args}

Usage:
  {usage}

Use \"kubectl canary <command> --help\" for more information about a given command.
";

/// Show, shift and verify the traffic split of a CanaryRelease.
#[derive(Parser, Debug)]
#[command(
    name = "kubectl canary",
    bin_name = "kubectl canary",
    version,
    help_template = ROOT_TEMPLATE,
    subcommand_help_heading = "Available Commands",
    disable_help_subcommand = true
)]
struct Cli {
    #[command(flatten)]
    connection: Connection,

    #[command(subcommand)]
    command: Command,
}

/// The connection flags kubectl itself takes, with the same meaning.
#[derive(Args, Debug)]
struct Connection {
    /// If present, the namespace scope for this CLI request.
    #[arg(short = 'n', long, global = true, help_heading = "Global Options")]
    namespace: Option<String>,

    /// The name of the kubeconfig context to use.
    #[arg(long, global = true, help_heading = "Global Options")]
    context: Option<String>,

    /// Path to the kubeconfig file to use for CLI requests.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        help_heading = "Global Options"
    )]
    kubeconfig: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show a release's models, images, applied weights, ready replicas, conditions and events.
    #[command(
        help_template = COMMAND_TEMPLATE,
        after_help = "\
Examples:
  # Show the release azureopenaichat in the namespace azureopenai
  kubectl canary status azureopenaichat -n azureopenai

  # The same as JSON, for scripts
  kubectl canary status azureopenaichat -n azureopenai -o json
"
    )]
    Status {
        /// Name of the CanaryRelease.
        name: String,

        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },

    /// Set the percent of traffic the canary gets, and wait until the release's route carries it.
    #[command(
        name = "set-weight",
        help_template = COMMAND_TEMPLATE,
        after_help = "\
Examples:
  # Send half of the traffic to the canary and wait until its route says so
  kubectl canary set-weight azureopenaichat 50 -n azureopenai

  # Promote the canary fully, without waiting
  kubectl canary set-weight azureopenaichat 100 -n azureopenai --wait=false

  # Roll back: no traffic to the canary, waiting at most 30 seconds
  kubectl canary set-weight azureopenaichat 0 -n azureopenai --timeout=30s
"
    )]
    SetWeight {
        /// Name of the CanaryRelease.
        name: String,

        /// Percent of traffic for the canary, 0-100; the stable version gets the rest.
        #[arg(value_parser = clap::value_parser!(i32).range(0..=100))]
        percent: i32,

        /// Wait until the route (VirtualService or HTTPRoute) carries the new weight.
        #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true",
              action = clap::ArgAction::Set)]
        wait: bool,

        /// How long to wait (for example 30s, 2m).
        #[arg(long, default_value = "60s", value_parser = duration::parse)]
        timeout: Duration,
    },

    /// Measure the traffic split at a URL and test it against the declared weight.
    #[command(
        help_template = COMMAND_TEMPLATE,
        after_help = "\
Sends --requests requests like the lab's test script (POST /chat, {\"message\": \"hi\"}) and
groups the answers by the \"model\" field: a model counts for the version whose model it starts
with, so gpt-4o-2024-08-06 counts for gpt-4o. The canary's share among those answers is tested
against the weight with an exact two-sided binomial test at the 5% level, and shown with a 95%
Clopper-Pearson confidence interval.

The models and the weight come from the release NAME; --stable-model, --canary-model and
--expect-weight override them, and with all three NAME (and cluster access) is not needed.

Exit status: 0 consistent with the weight, 1 inconsistent, 2 could not measure (unreachable,
more failed requests than --max-errors, answers from neither model, or bad usage).

Examples:
  # Check the release's split through the ingress gateway
  kubectl canary verify azureopenaichat -n azureopenai --url http://20.1.2.3

  # Without cluster access: 1000 requests, 16 at a time, expecting 25% for gpt-4o
  kubectl canary verify --url http://20.1.2.3/chat --requests 1000 --concurrency 16 \\
      --stable-model gpt-4.1 --canary-model gpt-4o --expect-weight 25
"
    )]
    Verify(VerifyArgs),

    /// Hold an automatic rollout at its current weight until `resume`.
    #[command(help_template = COMMAND_TEMPLATE, after_help = REQUEST_HELP)]
    Pause(RequestArgs),

    /// Continue a paused rollout (paused by request, or for missing data).
    #[command(help_template = COMMAND_TEMPLATE, after_help = REQUEST_HELP)]
    Resume(RequestArgs),

    /// End the current step (or approve a step that waits) and go to the next; --full goes to 100%.
    #[command(help_template = COMMAND_TEMPLATE, after_help = REQUEST_HELP)]
    Promote {
        #[command(flatten)]
        request: RequestArgs,

        /// Skip the remaining steps: 100% to the canary once it has the replicas for it.
        #[arg(long)]
        full: bool,
    },

    /// Stop the rollout: the canary gets no traffic until `retry` or a new revision.
    #[command(help_template = COMMAND_TEMPLATE, after_help = REQUEST_HELP)]
    Abort(RequestArgs),

    /// Roll out a rolled-back or aborted canary again, from the first step.
    #[command(help_template = COMMAND_TEMPLATE, after_help = REQUEST_HELP)]
    Retry(RequestArgs),

    /// Make a promoted canary the stable version: a spec edit (stable takes the canary's spec,
    /// canary is removed); no traffic moves and the old version's objects are removed.
    #[command(
        help_template = COMMAND_TEMPLATE,
        after_help = "\
Refused unless the canary already serves 100% (a promoted rollout, or set-weight 100 in manual
mode), so finalizing never moves traffic.

Examples:
  # Finish the rollout of azureopenaichat
  kubectl canary finalize azureopenaichat -n azureopenai

  # Print the edited release for a pull request instead (GitOps), changing nothing
  kubectl canary finalize azureopenaichat -n azureopenai --print > release.yaml
"
    )]
    Finalize {
        /// Name of the CanaryRelease.
        name: String,

        /// Print the edited release as YAML instead of changing it.
        #[arg(long)]
        print: bool,
    },
}

const REQUEST_HELP: &str = "\
The request is the annotation canary.dev/request (VERB@TIME) on the CanaryRelease; the operator acts
on it once and records it in status.rollout.lastRequest. The spec is not changed.

Examples:
  # Hold the rollout of azureopenaichat where it is
  kubectl canary pause azureopenaichat -n azureopenai

  # Approve the step that waits, and go on
  kubectl canary promote azureopenaichat -n azureopenai
";

#[derive(Args, Debug)]
struct RequestArgs {
    /// Name of the CanaryRelease.
    name: String,

    /// Wait until the operator has acted on the request.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    wait: bool,

    /// How long to wait (for example 30s, 2m).
    #[arg(long, default_value = "30s", value_parser = duration::parse)]
    timeout: Duration,
}

#[derive(Args, Debug)]
struct VerifyArgs {
    /// Name of the CanaryRelease whose models and weight to check.
    name: Option<String>,

    /// Where to send requests: the gateway's address; /chat is added when no path is given.
    #[arg(long)]
    url: String,

    /// Number of requests to send.
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    requests: u32,

    /// Requests in flight at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    concurrency: u32,

    /// Percent of failed requests (and answers from neither model) beyond which nothing is judged.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u8).range(0..=100))]
    max_errors: u8,

    /// Give up on a request after this long.
    #[arg(long, default_value = "10s", value_parser = duration::parse)]
    request_timeout: Duration,

    /// Stop sampling after this long, whatever has been answered.
    #[arg(long, default_value = "2m", value_parser = duration::parse)]
    timeout: Duration,

    /// Percent of traffic the canary should get, instead of the release's spec.weight.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
    expect_weight: Option<u8>,

    /// Model family of the stable version, instead of the release's.
    #[arg(long)]
    stable_model: Option<String>,

    /// Model family of the canary version, instead of the release's.
    #[arg(long)]
    canary_model: Option<String>,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let options = ConnectOptions {
        kubeconfig: cli.connection.kubeconfig,
        context: cli.connection.context,
        namespace: cli.connection.namespace,
    };
    match cli.command {
        Command::Status { name, output } => finish(run_status(&options, &name, output).await),
        Command::SetWeight {
            name,
            percent,
            wait,
            timeout,
        } => {
            let done = async {
                let target = cluster::connect(&options).await?;
                let wait = wait.then_some(timeout);
                set_weight::set_weight(&target, &name, percent, wait).await
            };
            finish(done.await.map(|change| out(&format!("{change}\n"))))
        }
        Command::Pause(args) => finish(run_request(&options, args, Verb::Pause).await),
        Command::Resume(args) => finish(run_request(&options, args, Verb::Resume).await),
        Command::Promote { request, full } => {
            let verb = if full {
                Verb::PromoteFull
            } else {
                Verb::Promote
            };
            finish(run_request(&options, request, verb).await)
        }
        Command::Abort(args) => finish(run_request(&options, args, Verb::Abort).await),
        Command::Retry(args) => finish(run_request(&options, args, Verb::Retry).await),
        Command::Finalize { name, print } => {
            let done = async {
                let target = cluster::connect(&options).await?;
                if print {
                    let release = target.release(&name).await?;
                    out(&finalize::manifest(&finalize::finalized(&release)?)?);
                } else {
                    out(&format!("{}\n", finalize::finalize(&target, &name).await?));
                }
                Ok(())
            };
            finish(done.await)
        }
        Command::Verify(args) => match run_verify(&options, args).await {
            Ok(verdict) => {
                if let Agreement::Unmeasured(reason) = &verdict {
                    err(&format!("error: could not measure: {reason}"));
                }
                ExitCode::from(verdict.exit_code())
            }
            Err(error) => {
                err(&format!("error: {error}"));
                ExitCode::from(2)
            }
        },
    }
}

/// Writes to stdout. A closed pipe (`kubectl canary status x | head -1`) is not an error worth
/// more than stopping the output, so write errors are ignored rather than panicking as `print!`
/// would.
fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// A line on stderr; see [`out`].
fn err(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

fn finish(result: Result<(), Error>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            err(&format!("error: {error}"));
            ExitCode::FAILURE
        }
    }
}

async fn run_request(options: &ConnectOptions, args: RequestArgs, verb: Verb) -> Result<(), Error> {
    let target = cluster::connect(options).await?;
    let answer =
        request::request(&target, &args.name, verb, args.wait.then_some(args.timeout)).await?;
    out(&format!("{answer}\n"));
    Ok(())
}

async fn run_status(options: &ConnectOptions, name: &str, output: Output) -> Result<(), Error> {
    let target = cluster::connect(options).await?;
    let summary = status::gather(&target, name).await?;
    match output {
        Output::Text => out(&summary.render(Timestamp::now())),
        Output::Json => out(&format!("{}\n", serde_json::to_string_pretty(&summary)?)),
    }
    Ok(())
}

async fn run_verify(options: &ConnectOptions, args: VerifyArgs) -> Result<Agreement, Error> {
    let url = verify::chat_url(&args.url)?;
    let expectation = expectation(options, &args).await?;
    let budget = verify::failure_budget(args.requests, args.max_errors);
    let report = if verify::precheck(&expectation).is_some() {
        // Nothing to send: the verdict is known from the expectation alone.
        let nothing = sample::Tally::default();
        verify::judge(
            &url,
            args.requests,
            args.concurrency,
            budget,
            expectation,
            nothing,
        )
    } else {
        let plan = Plan {
            url: url.clone(),
            requests: args.requests,
            concurrency: args.concurrency,
            request_timeout: args.request_timeout,
            total_timeout: args.timeout,
            failure_budget: budget,
        };
        let tally = sample::sample(&plan, &expectation.models, true).await?;
        verify::judge(
            &url,
            args.requests,
            args.concurrency,
            budget,
            expectation,
            tally,
        )
    };
    match args.output {
        Output::Text => out(&report.render()),
        Output::Json => out(&format!("{}\n", serde_json::to_string_pretty(&report)?)),
    }
    Ok(report.verdict)
}

/// The models and weight to check against: the release's, overridden by the flags; without a
/// release name every one must come from a flag.
async fn expectation(options: &ConnectOptions, args: &VerifyArgs) -> Result<Expectation, Error> {
    let Some(name) = &args.name else {
        let (Some(weight), Some(stable), Some(canary)) =
            (args.expect_weight, &args.stable_model, &args.canary_model)
        else {
            return Err(Error::Usage(
                "verify needs a release NAME, or all of --expect-weight, --stable-model and \
                 --canary-model"
                    .into(),
            ));
        };
        return Ok(Expectation {
            models: Models {
                stable: stable.clone(),
                canary: canary.clone(),
            },
            weight,
            source: "--expect-weight".into(),
        });
    };
    let target = cluster::connect(options).await?;
    let release = target.release(name).await?;
    // An automatic release is tested against the weight its rollout gives the canary now.
    let rollout_weight = release
        .status
        .as_ref()
        .and_then(|s| s.rollout.as_ref())
        .map(|r| r.weight);
    let (asked, what) = match (release.spec.weight, rollout_weight) {
        (Some(weight), _) => (weight, "spec.weight"),
        (None, weight) => (weight.unwrap_or_default(), "the rollout's weight"),
    };
    let declared = u8::try_from(asked).unwrap_or(u8::MAX);
    let applied = release.status.as_ref().and_then(|s| s.canary_weight);
    if args.expect_weight.is_none() && applied.is_some_and(|w| w != asked) {
        err(&format!(
            "warning: {what} is {asked} but the route still sends {}% to the canary; \
             the test is against {what}",
            applied.unwrap_or_default()
        ));
    }
    let source = match args.expect_weight {
        Some(_) => "--expect-weight".to_owned(),
        None => format!("{what} of canaryrelease {}/{name}", target.namespace),
    };
    Ok(Expectation {
        models: Models {
            stable: args
                .stable_model
                .clone()
                .unwrap_or(release.spec.stable.model),
            canary: match (args.canary_model.clone(), release.spec.canary) {
                (Some(model), _) => model,
                (None, Some(canary)) => canary.model,
                (None, None) => {
                    return Err(Error::Usage(format!(
                        "canaryrelease {name} has no canary: everything goes to its stable version; give --canary-model to check that no other model answers"
                    )));
                }
            },
        },
        weight: args.expect_weight.unwrap_or(declared),
        source,
    })
}
