"""What the roles of the stacks' Step Functions state machines share.

Each state machine gets a role built by its component, which the state machine cannot add to
(`Role.without_policy_updates()`): CDK would otherwise grant each task's integration its own way
(`ecs:runTask.sync` on every task of the account, say). The one grant every such role holds is
delivering the state machine's own logs and traces.
"""

from __future__ import annotations

from aws_cdk import aws_iam as iam

# Step Functions' vended log delivery (to the state machine's log group) and X-Ray: actions that
# accept only '*' (Service Authorization Reference), what CDK grants a state machine with logs
# and tracing.
_DELIVERY_ACTIONS = (
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
)


def deliver_logs_and_traces() -> iam.PolicyStatement:
    """The state machine's own logs (vended log delivery) and X-Ray traces."""
    return iam.PolicyStatement(
        sid="DeliverLogsAndTraces", actions=list(_DELIVERY_ACTIONS), resources=["*"]
    )
