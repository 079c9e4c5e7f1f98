"""`Client`: the synchronous SDK over the parasal.v1 services."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import grpc
import numpy as np

from parasal.v1 import saliency_pb2 as pb
from parasal.v1 import saliency_pb2_grpc as pb_grpc

from . import _browse, _config, _convert, _convert_browse, _convert_surprise
from ._browse import SampleIterator
from ._convert import as_int as _as_int
from ._images import ImageLike
from ._operations import OperationHandle
from .errors import InvalidArgument, NotFound, map_grpc_errors
from .types import (
    BundleInfo,
    ConfusionMatrix,
    Explanation,
    ExportedEdit,
    FailureModes,
    Operation,
    Profile,
    Sample,
    SimilarFailures,
    Surprise,
)

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

#: A standardized profile vector: a float array (F,) or a sequence of floats.
VectorLike: TypeAlias = "np.ndarray | Sequence[float]"
#: gRPC channel options overriding `_config.channel_options`: a dict or (key, value) pairs.
ChannelOptions: TypeAlias = "Mapping[str, object] | Iterable[tuple[str, object]]"


class Client:
    """A connection to a parasal server.

        with Client("127.0.0.1:50051", token="...") as c:
            print(c.index_info())
            for n in c.find_similar_failures(sample_id=7, only_misclassified=True):
                print(n.id, n.similarity, n.sample.predicted_name)

    `timeout` (seconds, None for none) is the deadline of each call unless the call gives
    its own. The token goes out as `authorization: Bearer <token>` on every call: as call
    credentials over TLS, as plain metadata otherwise. Errors are `ParasalError`s.

    gRPC itself retries queries and operation reads on UNAVAILABLE (4 attempts, backoff);
    starting an evaluation is never retried, and no call is retried on any other code.
    `options` (pairs or a dict) override the channel options of `_config.channel_options`.
    """

    def __init__(
        self,
        target: str = _config.DEFAULT_TARGET,
        token: str | None = None,
        timeout: float | None = _config.DEFAULT_TIMEOUT,
        *,
        tls: bool = False,
        root_certificates: bytes | str | os.PathLike | None = None,
        options: ChannelOptions | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        token = token.strip() if token else None
        channel_options = _config.channel_options(options)
        if tls:
            if isinstance(root_certificates, (str, os.PathLike)):
                root_certificates = Path(root_certificates).read_bytes()
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            if token:
                credentials = grpc.composite_channel_credentials(credentials, grpc.access_token_call_credentials(token))
            self._channel = grpc.secure_channel(target, credentials, options=channel_options)
            self._metadata: tuple[tuple[str, str], ...] | None = None
        else:
            if root_certificates is not None:
                raise InvalidArgument("root_certificates needs tls=True")
            self._channel = grpc.insecure_channel(target, options=channel_options)
            self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._saliency_stub = pb_grpc.SaliencyServiceStub(self._channel)
        self._evaluation_stub = pb_grpc.EvaluationServiceStub(self._channel)
        self._operations_stub = pb_grpc.OperationsServiceStub(self._channel)
        self._browse_stub = pb_grpc.BrowseServiceStub(self._channel)

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(target={self.target!r})"

    def _call(self, method, request, timeout):
        deadline = self.timeout if timeout is None else _timeout(timeout)
        with map_grpc_errors():
            return method(request, timeout=deadline, metadata=self._metadata)

    # -- SaliencyService ------------------------------------------------------------------

    def index_info(self, *, bundle: str = "", timeout: float | None = None) -> list[BundleInfo]:
        """The loaded bundles (only `bundle` when named; NotFound if it is not loaded)."""
        bundle = _name(bundle, "bundle")
        response = self._call(self._saliency_stub.ListBundles, pb.ListBundlesRequest(), timeout)
        bundles = [_convert.bundle_info_from_proto(m) for m in response.bundles]
        if bundle:
            bundles = [b for b in bundles if b.name == bundle]
            if not bundles:
                raise NotFound(f"bundle {bundle!r} is not loaded")
        return bundles

    def sample(self, id: int, *, include_image: bool = False, bundle: str = "", timeout: float | None = None) -> Sample:
        """Metadata of indexed sample `id` (and its PNG as `.image_png` with include_image)."""
        request = pb.GetSampleRequest(
            bundle=_name(bundle, "bundle"),
            id=_as_int(id, "id", 64),
            include_image=_flag(include_image, "include_image"),
        )
        return _convert.get_sample_response_from_proto(self._call(self._saliency_stub.GetSample, request, timeout))

    def sample_image(self, id: int, *, bundle: str = "", timeout: float | None = None) -> PILImage:
        """The stored image of sample `id` as a PIL image."""
        from PIL import Image

        sample = self.sample(id, include_image=True, bundle=bundle, timeout=timeout)
        if not sample.image_png:
            raise NotFound(f"the server sent no image for sample {id}")
        image = Image.open(io.BytesIO(sample.image_png))
        image.load()
        return image

    def profile(
        self,
        sample_id: int | None = None,
        image: ImageLike | None = None,
        label: int | None = None,
        full: bool = False,
        top_k: int | None = None,
        *,
        bundle: str = "",
        timeout: float | None = None,
    ) -> Profile:
        """Saliency profile of an indexed sample or an image with its label (`full`: the vector).

        `top_k` None: the server default (the proto: 10)."""
        query = _query(sample_id, image, label)
        request = pb.GetProfileRequest(
            bundle=_name(bundle, "bundle"),
            top_k=_positive_or_default(top_k, "top_k"),
            include_vector=_flag(full, "full"),
            **query,
        )
        return _convert.profile_from_proto(self._call(self._saliency_stub.GetProfile, request, timeout))

    def find_similar_failures(
        self,
        sample_id: int | None = None,
        image: ImageLike | None = None,
        label: int | None = None,
        vector: VectorLike | None = None,
        k: int | None = None,
        only_misclassified: bool = False,
        exclude_self: bool = True,
        layers: Iterable[str] | str | None = None,
        true_labels: Iterable[int] | None = None,
        predicted_labels: Iterable[int] | None = None,
        include_top_filters: bool = False,
        *,
        beta_below: float | None = None,
        beta_above: float | None = None,
        only_with_surprise: bool = False,
        bundle: str = "",
        timeout: float | None = None,
    ) -> SimilarFailures:
        """The k samples with the most similar profiles (cosine), most similar first.

        `k` None: the server default (the proto: 10). Each neighbour's `sample.top_filters`
        is empty unless `include_top_filters` (they are most of an answer's size and
        decoding time; `sample(id)` has them too). `beta_below` / `beta_above` /
        `only_with_surprise` keep only neighbours with beta below / above those values or
        with a surprise filter (bundles with reference data; FailedPrecondition otherwise)."""
        if vector is not None:
            if sample_id is not None or image is not None:
                raise InvalidArgument("give exactly one of sample_id, image or vector")
            if label is not None:
                raise InvalidArgument("label is only used with image")
            query = {"vector": pb.ProfileVector(values=_profile_vector(vector).tolist())}
        else:
            query = _query(sample_id, image, label, alternatives="sample_id, image or vector")
        request = pb.FindSimilarFailuresRequest(
            bundle=_name(bundle, "bundle"),
            k=_positive_or_default(k, "k"),
            only_misclassified=_flag(only_misclassified, "only_misclassified"),
            include_query=not _flag(exclude_self, "exclude_self"),
            layers=_names(layers, "layers"),
            true_labels=_int_list(true_labels, "true_labels"),
            predicted_labels=_int_list(predicted_labels, "predicted_labels"),
            include_top_filters=_flag(include_top_filters, "include_top_filters"),
            only_with_surprise=_flag(only_with_surprise, "only_with_surprise"),
            **query,
        )
        if beta_below is not None:
            request.beta_below = _finite_float(beta_below, "beta_below")
        if beta_above is not None:
            request.beta_above = _finite_float(beta_above, "beta_above")
        response = self._call(self._saliency_stub.FindSimilarFailures, request, timeout)
        return _convert.similar_failures_from_proto(response)

    def explain_input(
        self,
        sample_id: int | None = None,
        image: ImageLike | None = None,
        label: int | None = None,
        top_k: int | None = None,
        filters: Iterable[int] | None = None,
        boost: float | None = None,
        *,
        bundle: str = "",
        timeout: float | None = None,
    ) -> Explanation:
        """Input-space saliency: which pixels drive the top-k (or the given) salient filters.

        None takes the server default (the proto: `top_k` 10, `boost` 100). The heatmap is
        over the model's input; the overlay is drawn on the original image (the size
        `sample_image` returns), `Explanation.overlay()` enlarges it to read."""
        query = _query(sample_id, image, label)
        boost = _positive_float_or_default(boost, "boost")
        request = pb.ExplainInputRequest(
            bundle=_name(bundle, "bundle"),
            top_k=_positive_or_default(top_k, "top_k"),
            filters=_int_list(filters, "filters"),
            boost=boost,
            **query,
        )
        return _convert.explanation_from_proto(self._call(self._saliency_stub.ExplainInput, request, timeout))

    def surprise(
        self,
        sample_id: int | None = None,
        *,
        image: ImageLike | None = None,
        label: int | None = None,
        bundle: str = "",
        high: float | None = None,
        low: float | None = None,
        max_filters: int | None = None,
        detailed: int | None = None,
        exemplars: int | None = None,
        exemplars_any_class: bool = False,
        segments: int | None = None,
        include_alpha: bool = True,
        include_exemplar_images: bool = False,
        timeout: float | None = None,
    ) -> Surprise:
        """Surprise and expectation (Hartley et al.) of an indexed sample or an image with its label.

        None takes the server default (the proto: percentiles `high` 99.9 and `low` 0.1;
        `max_filters` all; `detailed` 3 filters of each list with a region and exemplars;
        `exemplars` 6 per detailed filter, from the sample's class unless
        `exemplars_any_class`; `segments` 50 SLIC superpixels). `include_exemplar_images`
        also fetches each exemplar's PNG. FailedPrecondition when the bundle has no
        reference data."""
        request = pb.ExplainSurpriseRequest(
            bundle=_name(bundle, "bundle"),
            high_percentile=_percentile_or_default(high, "high"),
            low_percentile=_percentile_or_default(low, "low"),
            max_filters=_positive_or_default(max_filters, "max_filters"),
            detailed=_positive_or_default(detailed, "detailed"),
            exemplars=_positive_or_default(exemplars, "exemplars"),
            exemplars_any_class=_flag(exemplars_any_class, "exemplars_any_class"),
            segments=_positive_or_default(segments, "segments"),
            include_alpha=_flag(include_alpha, "include_alpha"),
            include_exemplar_images=_flag(include_exemplar_images, "include_exemplar_images"),
            **_query(sample_id, image, label),
        )
        response = self._call(self._saliency_stub.ExplainSurprise, request, timeout)
        return _convert_surprise.surprise_from_proto(response)

    # -- BrowseService --------------------------------------------------------------------

    def samples(
        self,
        *,
        bundle: str = "",
        true_labels: Iterable[int | str] | int | str | None = None,
        predicted_labels: Iterable[int | str] | int | str | None = None,
        correct: bool | None = None,
        min_true_confidence: float | None = None,
        max_true_confidence: float | None = None,
        min_loss: float | None = None,
        max_loss: float | None = None,
        beta_below: float | None = None,
        beta_above: float | None = None,
        only_with_surprise: bool = False,
        only_with_expectation: bool = False,
        failure_mode: int | None = None,
        order_by: str = "id",
        descending: bool = False,
        include_top_filters: bool = False,
        page_size: int | None = None,
        limit: int | None = None,
        timeout: float | None = None,
    ) -> SampleIterator:
        """Indexed samples matching every filter given, sorted by `order_by` (id, loss,
        true_confidence, predicted_confidence or beta; ties by id), fetched a page at a time
        as iteration needs them; `.total_size` counts every match. Labels are class numbers or
        names. `correct` False keeps the misclassified ones; ranges are inclusive; `beta_below`
        / `beta_above` are strict and, like `only_with_*`, need a bundle with reference data
        (FailedPrecondition otherwise). `page_size` None: the server's (100), or `limit` when
        smaller; `limit`: stop after that many samples."""
        bundle = _name(bundle, "bundle")
        if timeout is not None:
            _timeout(timeout)  # checked now: the calls happen as iteration needs them
        names = _class_names_of(self, bundle, timeout)
        if limit is not None:
            limit = _positive(limit, "limit")
            if page_size is None and limit < 100:
                page_size = limit
        request = _browse.list_samples_request(
            bundle=bundle,
            true_labels=_browse.resolve_labels(true_labels, "true_labels", names),
            predicted_labels=_browse.resolve_labels(predicted_labels, "predicted_labels", names),
            correct=correct,
            min_true_confidence=min_true_confidence,
            max_true_confidence=max_true_confidence,
            min_loss=min_loss,
            max_loss=max_loss,
            beta_below=beta_below,
            beta_above=beta_above,
            only_with_surprise=_flag(only_with_surprise, "only_with_surprise"),
            only_with_expectation=_flag(only_with_expectation, "only_with_expectation"),
            failure_mode=failure_mode,
            order_by=order_by,
            descending=_flag(descending, "descending"),
            include_top_filters=_flag(include_top_filters, "include_top_filters"),
            page_size=page_size,
        )

        def fetch(token: str):
            request.page_token = token
            response = self._call(self._browse_stub.ListSamples, request, timeout)
            return _convert_browse.sample_page_from_proto(response)

        return SampleIterator(fetch, limit)

    def confusion_matrix(self, bundle: str = "", *, timeout: float | None = None) -> ConfusionMatrix:
        """The bundle's confusion matrix (`counts[true, predicted]`) and per-class accuracy."""
        request = pb.GetConfusionMatrixRequest(bundle=_name(bundle, "bundle"))
        response = self._call(self._browse_stub.GetConfusionMatrix, request, timeout)
        return _convert_browse.confusion_matrix_from_proto(response)

    def failure_modes(
        self,
        bundle: str = "",
        *,
        medoids: int | None = None,
        top_filters: int | None = None,
        include_map: bool = False,
        include_members: bool = False,
        timeout: float | None = None,
    ) -> FailureModes:
        """The bundle's failure modes: its misclassified samples clustered by their profiles'
        cosine geometry, the number of modes chosen by silhouette (see `.method`). None takes the
        server's `medoids` (5) and `top_filters` (10), at most 100 each; `include_map` adds the
        2-D failure map, `include_members` every mode's member ids. The server computes them on
        the first call (seconds) and caches them. FailedPrecondition with fewer than 4
        misclassified samples."""
        medoids, top_filters = _browse.mode_counts(medoids, top_filters)
        request = pb.ListFailureModesRequest(
            bundle=_name(bundle, "bundle"),
            medoids=medoids,
            top_filters=top_filters,
            include_map=_flag(include_map, "include_map"),
            include_members=_flag(include_members, "include_members"),
        )
        response = self._call(self._browse_stub.ListFailureModes, request, timeout)
        return _convert_browse.failure_modes_from_proto(response)

    # -- EvaluationService ----------------------------------------------------------------

    def start_finetune_evaluation(
        self,
        sample_id: int | None = None,
        image: ImageLike | None = None,
        label: int | None = None,
        counts: Sequence[int] | None = None,
        selections: Sequence[str] | str | None = None,
        step_size: float | None = None,
        num_neighbors: int | None = None,
        neighbor_bundle: str = "",
        seed: int = 0,
        *,
        count_fractions: Sequence[float] | None = None,
        random_draws: int | None = None,
        num_collateral: int | None = None,
        skip_collateral: bool = False,
        failure_mode: int | None = None,
        bundle: str = "",
        timeout: float | None = None,
    ) -> OperationHandle:
        """Starts a fine-tuning evaluation (Levin et al. section 3.3); returns at once.

        One gradient step on the reference alone (section B.1): the `count` most salient
        filters take `step_size` times their raw loss gradient; random and least-salient
        sets are first rescaled to the salient set's gradient norm, so every selection moves
        the model as far; the whole-network row (count 0, labelled by its `parameters`)
        takes `step_size` times the whole gradient. Choose `step_size` as the paper does:
        the learning rate of the model's last training epoch (the demo model's last epoch
        ran from 0.0047 down to 0.000004, mean 0.0016: the default 0.001 is in it).

        `counts` and `count_fractions` (each in (0, 1] of the network's filters, rounded up
        to at least one) are combined; neither: the server's default counts (0.15 %, 0.3 %,
        0.75 %, 3.7 % and 11 % of the filters: 1, 2, 5, 25, 74 for the demo's 672). Random
        rows average `random_draws` draws (default 5), seeded with `seed` mixed with the
        reference (each reference draws its own filters). Every row is also measured on
        `num_collateral` (default 500) correctly classified samples drawn with the seed
        (`skip_collateral` turns that off). `failure_mode` (an id from `failure_modes()`)
        instead of a sample or image: the step on the mode's medoid, measured on its other
        members. None sends 0 / empty, the server default (selections most, random, least;
        step_size 0.001; num_neighbors 10)."""
        step_size = _positive_float_or_default(step_size, "step_size")
        if failure_mode is None:
            reference = _query(sample_id, image, label)
        elif sample_id is not None or image is not None or label is not None:
            raise InvalidArgument("give failure_mode or a sample_id / image, not both")
        else:
            reference = {"failure_mode": _as_int(failure_mode, "failure_mode")}
        request = pb.StartFinetuneEvaluationRequest(
            bundle=_name(bundle, "bundle"),
            counts=_counts(counts),
            selections=_selections(selections),
            step_size=step_size,
            num_neighbors=_positive_or_default(num_neighbors, "num_neighbors"),
            neighbor_bundle=_name(neighbor_bundle, "neighbor_bundle"),
            seed=_as_int(seed, "seed", 64),
            count_fractions=_fractions(count_fractions),
            random_draws=_positive_or_default(random_draws, "random_draws"),
            num_collateral=_positive_or_default(num_collateral, "num_collateral"),
            skip_collateral=_flag(skip_collateral, "skip_collateral"),
            **reference,
        )
        response = self._call(self._evaluation_stub.StartFinetuneEvaluation, request, timeout)
        return OperationHandle(self, _convert.operation_from_proto(response.operation))

    def start_pruning_evaluation(
        self,
        sample_id: int | None = None,
        image: ImageLike | None = None,
        label: int | None = None,
        counts: Sequence[int] | None = None,
        selections: Sequence[str] | str | None = None,
        num_neighbors: int | None = None,
        seed: int = 0,
        *,
        count_fractions: Sequence[float] | None = None,
        random_draws: int | None = None,
        num_collateral: int | None = None,
        skip_collateral: bool = False,
        bundle: str = "",
        timeout: float | None = None,
    ) -> OperationHandle:
        """Starts a pruning evaluation (Levin et al. section 3.1); returns at once.

        Zeroes the chosen filters (and their BatchNorm channels). Counts, count_fractions,
        random draws and collateral as in `start_finetune_evaluation`. None sends 0 / empty,
        the server default (selections most, random, least; num_neighbors 10, as for
        fine-tuning)."""
        request = pb.StartPruningEvaluationRequest(
            bundle=_name(bundle, "bundle"),
            counts=_counts(counts),
            selections=_selections(selections),
            num_neighbors=_positive_or_default(num_neighbors, "num_neighbors"),
            seed=_as_int(seed, "seed", 64),
            count_fractions=_fractions(count_fractions),
            random_draws=_positive_or_default(random_draws, "random_draws"),
            num_collateral=_positive_or_default(num_collateral, "num_collateral"),
            skip_collateral=_flag(skip_collateral, "skip_collateral"),
            **_query(sample_id, image, label),
        )
        response = self._call(self._evaluation_stub.StartPruningEvaluation, request, timeout)
        return OperationHandle(self, _convert.operation_from_proto(response.operation))

    def start_suppression(
        self,
        sample_id: int | None = None,
        *,
        image: ImageLike | None = None,
        label: int | None = None,
        segments: Sequence[int] | None = None,
        blank_counts: Sequence[int] | None = None,
        bundle: str = "",
        timeout: float | None = None,
    ) -> OperationHandle:
        """Starts surprise suppression (Hartley et al. section 4.5) on one sample; returns at once.

        Blanks the superpixels that most drive the sample's most surprising filter, for
        every SLIC superpixel count in `segments` and number blanked in `blank_counts`,
        against vanilla backprop. None sends empty, the server default (the proto:
        segments 25, 50, 100; blank_counts 1, 2, 3, 5). The result is a `SuppressionResult`."""
        request = pb.StartSuppressionRequest(
            bundle=_name(bundle, "bundle"),
            segments=_nonempty_positive_list(segments, "segments"),
            blank_counts=_nonempty_positive_list(blank_counts, "blank_counts"),
            **_query(sample_id, image, label),
        )
        response = self._call(self._evaluation_stub.StartSuppression, request, timeout)
        return OperationHandle(self, _convert.operation_from_proto(response.operation))

    def start_experiment(
        self,
        name: str,
        *,
        bundle: str = "",
        references: int | None = None,
        seed: int = 0,
        options: Mapping[str, object] | None = None,
        timeout: float | None = None,
    ) -> OperationHandle:
        """Starts a dataset-level experiment (one of `types.EXPERIMENT_NAMES`: pruning,
        finetune, neighbors, masking, sanity, ranking, beta, suppression); returns at once.

        `references` None sends 0: the experiment's default (all misclassified samples up
        to its cap); `options` are the experiment's own settings (values sent as strings;
        unknown keys are refused with InvalidArgument). The result is an `ExperimentResult`
        (`.points`, `.to_dict()`, `.json`, `.plot_png`)."""
        from ._experiment_types import EXPERIMENT_NAMES

        if name not in EXPERIMENT_NAMES:
            raise InvalidArgument(f"unknown experiment {str(name)[:80]!r}; choose one of {', '.join(EXPERIMENT_NAMES)}")
        if options is not None and not isinstance(options, Mapping):
            raise InvalidArgument("options must be a mapping of option names to values")
        request = pb.StartExperimentRequest(
            bundle=_name(bundle, "bundle"),
            name=name,
            references=0 if references is None else _as_int(references, "references"),
            seed=_as_int(seed, "seed", 64),
            options={str(k): _option_text(v) for k, v in (options or {}).items()},
        )
        response = self._call(self._evaluation_stub.StartExperiment, request, timeout)
        return OperationHandle(self, _convert.operation_from_proto(response.operation))

    def export_edited_model(
        self,
        op_id: str,
        *,
        selection: str,
        count: int,
        draw: int = 0,
        out: str | os.PathLike,
        timeout: float | None = None,
    ) -> ExportedEdit:
        """Writes the edited model of one row of a finished fine-tuning or pruning evaluation
        to `out` (a torch.save state dict: `model.load_state_dict(torch.load(out))` on your
        own copy of the model gives the row's predictions).

        `selection`: "most", "random", "least" or "whole_network" (count 0); `draw`: which
        random draw (0..random_draws-1; 0 is the one the row's `filters` list). The file is
        complete or absent: it is renamed into place once every byte has arrived."""
        from ._export import write_export

        request = pb.ExportEditedModelRequest(
            operation_id=_op_id(op_id),
            selection=_export_selection(selection),
            count=_as_int(count, "count"),
            draw=_as_int(draw, "draw"),
        )
        deadline = self.timeout if timeout is None else _timeout(timeout)
        stub = self._evaluation_stub.ExportEditedModel
        return write_export(stub, request, out, timeout=deadline, metadata=self._metadata)

    # -- OperationsService ----------------------------------------------------------------

    def operations(
        self, state: str | None = None, page_size: int | None = None, *, bundle: str = "", timeout: float | None = None
    ) -> list[Operation]:
        """Operations, newest first (only those in `state`, and of `bundle` when named).

        `page_size` None: the server default (the proto: 100)."""
        bundle = _name(bundle, "bundle")
        request = pb.ListOperationsRequest(
            page_size=_positive_or_default(page_size, "page_size"), state=_convert.state_to_proto(state)
        )
        response = self._call(self._operations_stub.ListOperations, request, timeout)
        ops = [_convert.operation_from_proto(m) for m in response.operations]
        return [op for op in ops if op.bundle == bundle] if bundle else ops

    def operation(self, op_id: str, *, bundle: str = "", timeout: float | None = None) -> Operation:
        """One operation, with its result once finished (NotFound if it is not of `bundle`, when named)."""
        bundle = _name(bundle, "bundle")
        response = self._call(self._operations_stub.GetOperation, pb.GetOperationRequest(id=_op_id(op_id)), timeout)
        op = _convert.operation_from_proto(response.operation)
        if bundle and op.bundle != bundle:
            raise NotFound(f"operation {op.id} belongs to bundle {op.bundle!r}, not {bundle!r}")
        return op

    def cancel(self, op_id: str, *, bundle: str = "", timeout: float | None = None) -> Operation:
        """Asks a pending or running operation to stop; finished ones come back unchanged."""
        if _name(bundle, "bundle"):
            self.operation(op_id, bundle=bundle, timeout=timeout)  # refuse another bundle's operation
        request = pb.CancelOperationRequest(id=_op_id(op_id))
        return _convert.operation_from_proto(
            self._call(self._operations_stub.CancelOperation, request, timeout).operation
        )

    def operation_handle(self, op_id: str) -> OperationHandle:
        """A handle on an operation started earlier (e.g. by another process)."""
        return OperationHandle(self, _op_id(op_id))


# ---------------------------------------------------------------------------------------
# Argument checks: done here, before any call, so mistakes fail fast and typed. None
# becomes the proto's "unset" (0 or empty), which the server reads as its default, so
# no default is restated here. An explicit 0 or empty list is refused as before.


def _query(sample_id, image, label, alternatives: str = "sample_id or image") -> dict:
    """The oneof of a request: {"sample_id": int} or {"image": ImageInput}."""
    if (sample_id is None) == (image is None):
        raise InvalidArgument(f"give exactly one of {alternatives}")
    if sample_id is not None:
        if label is not None:
            raise InvalidArgument("label is only used with image (an indexed sample has its own)")
        return {"sample_id": _as_int(sample_id, "sample_id", 64)}
    return {"image": _convert.image_input(image, label)}


def _class_names_of(client: Client, bundle: str, timeout):
    """A function giving the bundle's class names (one ListBundles call, only when asked)."""

    def names() -> list[str]:
        bundles = client.index_info(bundle=bundle, timeout=timeout)
        return bundles[0].class_names if bundles else []

    return names


def _positive(value, name: str) -> int:
    value = _as_int(value, name)
    if value < 1:
        raise InvalidArgument(f"{name} must be >= 1, got {value}")
    return value


def _positive_or_default(value, name: str) -> int:
    """0 (the server default) for None, else an integer >= 1."""
    return 0 if value is None else _positive(value, name)


def _positive_float_or_default(value, name: str) -> float:
    """0.0 (the server default) for None, else a positive finite float."""
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidArgument(f"{name} must be a number, got {_convert._shown(value)}")
    if not 0 < value < math.inf:  # NaN fails too
        raise InvalidArgument(f"{name} must be positive and finite, got {value!r}")
    return float(value)


def _items(values, name: str, kind: str) -> list:
    """The entries of a sequence argument (a str or bytes is not a sequence of entries here)."""
    if isinstance(values, (str, bytes)):
        raise InvalidArgument(f"{name} must be a sequence of {kind}, got {_convert._shown(values)}")
    try:
        return list(values)
    except TypeError:
        raise InvalidArgument(f"{name} must be a sequence of {kind}, got {_convert._shown(values)}") from None


def _int_list(values, name: str) -> list[int]:
    if values is None:
        return []
    return [_as_int(v, name) for v in _items(values, name, "integers")]


def _name(value, name: str) -> str:
    """A string argument (bundle names); "" is the server's default."""
    if not isinstance(value, str):
        raise InvalidArgument(f"{name} must be a string, got {_convert._shown(value)}")
    return value


def _names(values, name: str) -> list[str]:
    """A string or a sequence of strings (layer names); None: none."""
    if values is None:
        return []
    if isinstance(values, str):
        return [values]
    return [_name(v, name) for v in _items(values, name, "strings")]


def _flag(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidArgument(f"{name} must be True or False, got {_convert._shown(value)}")
    return bool(value)


def _timeout(value) -> float:
    """A per-call deadline in seconds (None, the client's default, is handled by the caller)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not value >= 0:
        raise InvalidArgument(f"timeout must be a number of seconds >= 0, got {_convert._shown(value)}")
    return float(value)


def _counts(counts) -> list[int]:
    if counts is None:
        return []
    result = [_positive(c, "counts") for c in _int_list(counts, "counts")]
    if not result:
        raise InvalidArgument("counts must not be empty")
    return result


def _fractions(values) -> list[float]:
    """[] for None, else fractions in (0, 1] of the network's filters."""
    if values is None:
        return []
    result = [_finite_float(v, "count_fractions") for v in _items(values, "count_fractions", "numbers")]
    for value in result:
        if not 0 < value <= 1:
            raise InvalidArgument(f"count_fractions must be in (0, 1], got {value!r}")
    return result


def _export_selection(selection) -> int:
    """A row's selection for export: most / random / least or whole_network."""
    if isinstance(selection, str) and selection.strip().lower() == "whole_network":
        return pb.SELECTION_WHOLE_NETWORK
    return _convert.selection_to_proto(selection)


def _selections(selections) -> list[int]:
    if selections is None:
        return []
    if isinstance(selections, str):
        selections = [selections]
    result = [_convert.selection_to_proto(s) for s in _items(selections, "selections", "names")]
    if not result:
        raise InvalidArgument("selections must not be empty")
    return result


def _finite_float(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidArgument(f"{name} must be a number, got {_convert._shown(value)}")
    if not math.isfinite(value):
        raise InvalidArgument(f"{name} must be finite, got {value!r}")
    return float(value)


def _percentile_or_default(value, name: str) -> float:
    """0.0 (the server default) for None, else a percentile strictly between 0 and 100."""
    if value is None:
        return 0.0
    value = _finite_float(value, name)
    if not 0 < value < 100:
        raise InvalidArgument(f"{name} must be a percentile strictly between 0 and 100, got {value!r}")
    return value


def _nonempty_positive_list(values, name: str) -> list[int]:
    """[] (the server default) for None, else a non-empty list of integers >= 1."""
    if values is None:
        return []
    result = [_positive(v, name) for v in _int_list(values, name)]
    if not result:
        raise InvalidArgument(f"{name} must not be empty")
    return result


def _profile_vector(vector) -> np.ndarray:
    try:
        array = np.asarray(vector, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"vector must be numeric: {exc}") from exc
    if array.ndim != 1 or array.size == 0:
        raise InvalidArgument(f"vector must be a non-empty 1-D array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise InvalidArgument("vector contains NaN or Inf")
    return array


def _op_id(op_id) -> str:
    if not isinstance(op_id, str) or not op_id.strip():
        raise InvalidArgument(f"operation id must be a non-empty string, got {op_id!r}")
    return op_id.strip()


def _option_text(value) -> str:
    """An experiment option as sent: lists joined with commas, booleans as true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)
