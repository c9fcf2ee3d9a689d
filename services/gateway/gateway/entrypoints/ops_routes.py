"""Operations endpoints: liveness, readiness of every backend, Prometheus metrics (OPS-2, OPS-1),
and the consistency auditor's report for admins (OPS-3)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from gateway.api.convert import actor_to_proto, timestamp_to_iso
from gateway.api.errors import error_responses
from gateway.entrypoints.deps import BackendsDep, require_roles
from gateway.service_layer.auth import Principal
from hirepay.jobs.v1 import jobs_service_pb2 as jobs_pb
from hirepay_platform.readiness import unavailable_dependencies

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: every backend's gRPC health says SERVING",
    responses={
        503: {
            "description": "SERVICE_UNAVAILABLE: `down` lists the backends, `dependencies` what"
            " each NOT_SERVING backend says is down (e.g. its database)"
        }
    },
)
async def readyz(request: Request, backends: BackendsDep) -> JSONResponse:
    timeout = request.app.state.settings.readiness_timeout_seconds
    statuses = await backends.health(timeout)
    down = sorted(name for name, status in statuses.items() if status != "SERVING")
    if down:
        # A backend that answers NOT_SERVING names its own missing dependency (OPS-2).
        dependencies = {
            name: await unavailable_dependencies(backends.raw[name].channel, timeout)
            for name in down
            if statuses[name] == "NOT_SERVING"
        }
        named = [
            f"{name} ({', '.join(dependencies[name])} down)" if dependencies.get(name) else name
            for name in down
        ]
        return JSONResponse(
            {
                "error": "SERVICE_UNAVAILABLE",
                "message": "Not ready: " + ", ".join(named) + " unavailable",
                "down": down,
                "backends": statuses,
                "dependencies": {name: deps for name, deps in dependencies.items() if deps},
            },
            status_code=503,
            headers={"Retry-After": "1"},
        )
    return JSONResponse({"status": "ready", "backends": statuses})


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


Admin = Annotated[Principal, Depends(require_roles("admin"))]


@router.get(
    "/api/admin/consistency",
    summary="The consistency auditor's report now (OPS-3): violations by check, offending ids",
    description=(
        "`{checkedAt, counts, violations: [{check, subjectId, detail}], purchaseRefunds}`."
        " `purchaseRefunds` is what the round's reconciliation with the providers read, found"
        " and booked of plan purchases refunded at a provider that sends no refund event"
        " (Fatora's dashboard): `{purchasesChecked, found, booked: [{transactionId, provider,"
        " amountMinor, currency, refundedInFull}], purchasesUnreadable}`; `found` counts those"
        " with refunds not booked when read (booked by this round, or by one at once), `booked`"
        " lists this round's bookings; null when the round did not reconcile."
    ),
    responses=error_responses(401, 403, 502, 503, 504),
)
async def consistency_report(principal: Admin, backends: BackendsDep) -> dict[str, Any]:
    report = await backends.jobs.get_consistency_report(
        jobs_pb.GetConsistencyReportRequest(actor=actor_to_proto(principal))
    )
    return {
        "checkedAt": timestamp_to_iso(report.checked_at),
        "counts": dict(report.counts),
        "violations": [
            {"check": v.check, "subjectId": v.subject_id, "detail": v.detail}
            for v in report.violations
        ],
        "purchaseRefunds": _purchase_refunds(report),
    }


def _purchase_refunds(report: jobs_pb.ConsistencyReport) -> dict[str, Any] | None:
    """What the round's reconciliation read, found and booked of plan purchases refunded at a
    provider that sends no refund event (Fatora's dashboard); None: it did not reconcile."""
    if not report.HasField("purchase_refunds"):
        return None
    found = report.purchase_refunds
    return {
        "purchasesChecked": found.purchases_checked,
        "found": found.refunds_found,
        "booked": [
            {
                "transactionId": b.transaction_id,
                "provider": b.provider,
                "amountMinor": b.amount_minor,
                "currency": b.currency,
                "refundedInFull": b.refunded_in_full,
            }
            for b in found.refunds_booked
        ],
        "purchasesUnreadable": found.purchases_unreadable,
    }
