"""Stage C: the journey engine of one by-customer partition, its KPI cells, and what they
produce: journey and irritant rows and records, KPI rows, messages to other customer keys
(merge payloads, forwarded items), and the state changes to store."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence

from journeystream.core.config import RulesConfig
from journeystream.core.facts import AppliedEvent, Irritant, JourneyClosed, JourneyRecord
from journeystream.core.identity import ANONYMOUS_PREFIX
from journeystream.core.journeys import JourneyEngine, KeyedEvent, MergePayload, MergeRequest
from journeystream.core.journeys import Message as EngineMessage
from journeystream.sinks.rows import (
    IRRITANTS,
    JOURNEYS,
    irritant_json,
    irritant_row,
    journey_json,
    journey_row,
)
from journeystream.stages.control import cascade
from journeystream.stages.effects import (
    NO_OBSERVER,
    Effects,
    ErasurePart,
    OutputRecord,
    Record,
    StageObserver,
    StateChanges,
)
from journeystream.stages.envelope import Erase, Message, Watermark, unpack
from journeystream.stages.kpicells import PartitionKpis
from journeystream.stages.pending import PendingOffsets
from journeystream.stages.routing import Outbox, Partitioner
from journeystream.stages.topology import Topology

CUSTOMERS = "customers"
KPI_CELLS = "kpi_cells"


class JourneyProcessor:
    """Stage C for one partition (stores: customer key -> state; KPI cells and marks)."""

    # KPI cells are stored before the customer states: never a state without the cells
    # that counted its facts (the reverse is undone by the cells' fact sequences)
    stores = (KPI_CELLS, CUSTOMERS)

    def __init__(
        self,
        partition: int,
        topology: Topology,
        rules: RulesConfig,
        kpi_horizon_ms: int,
        load: Callable[[str, bytes], bytes | None],
        stored_customers: Iterable[tuple[bytes, bytes]] = (),
        stored_kpi_cells: Iterable[tuple[bytes, bytes]] = (),
        observer: StageObserver = NO_OBSERVER,
        keep_going: Callable[[], bool] = lambda: True,
    ) -> None:
        self.partition = partition
        self.topology = topology
        self.observer = observer
        sources = topology.sources("A") + topology.sources("B")
        self.engine = JourneyEngine(rules, sources, load=lambda key: load(CUSTOMERS, key.encode()))
        self.engine.keep_going = keep_going
        for key, value in stored_customers:
            self.engine.restore(key.decode(), value)
        self.kpis = PartitionKpis(partition, kpi_horizon_ms, stored_kpi_cells)
        self.pending = PendingOffsets()
        self._rest: deque[tuple[int, Sequence[Message]]] = deque()  # handed over, not processed
        self._fetched_to = 0
        self._kpi_changes: StateChanges = {}
        self._partition_of = Partitioner(topology.partitions)

    def process(self, records: Sequence[Record], effects: Effects) -> None:
        """A batch of by-customer records."""
        self.process_messages([(record.offset, unpack(record.value)) for record in records], effects)

    def process_messages(self, batch: Sequence[tuple[int, Sequence[Message]]], effects: Effects) -> None:
        """A batch of (offset, messages of the record at that offset). If the engine stops
        short (`busy`), the rest waits for `resume`; the caller hands nothing more before."""
        if self._rest:
            raise RuntimeError("a batch handed to a busy journey processor: resume it first")
        if batch:
            self._rest.extend(batch)
            self._fetched_to = batch[-1][0] + 1
        self.resume(effects)

    @property
    def busy(self) -> bool:
        """Records handed over and not yet processed: the engine stopped at `keep_going`."""
        return bool(self._rest)

    @property
    def changed_customers(self) -> int:
        """Customers whose state the next checkpoint writes (held as objects until then)."""
        return self.engine.changed_customers

    @property
    def next_offset(self) -> int:
        """The first offset not wholly processed (its record is read again after a crash)."""
        return self._rest[0][0] if self._rest else self._fetched_to

    def resume(self, effects: Effects) -> bool:
        """Go on with what was handed over; True once all of it is processed."""
        done = self._process_rest(effects)
        self._send(self.engine.drain_messages(), effects)
        return done

    def _process_rest(self, effects: Effects) -> bool:
        engine, hold, rest = self.engine, self.pending.hold, self._rest
        if engine.behind and not engine.resume():
            return False
        while rest:
            offset, messages = rest.popleft()
            for index, message in enumerate(messages):
                # the message classes are final: the exact type, commonest first
                if type(message) is KeyedEvent or type(message) is MergeRequest:
                    engine.push(message)
                    hold(message, offset)
                elif type(message) is Watermark:
                    engine.observe(message.source, message.watermark)
                    if engine.behind:  # the rest of this record after it, then the others
                        rest.appendleft((offset, messages[index + 1 :]))
                        return False
                elif type(message) is MergePayload:
                    engine.receive_payload(message)
                elif type(message) is Erase:
                    self._erase(message, effects)
                else:
                    raise ValueError(f"unexpected {type(message).__name__} on the by-customer topic")
        return True

    def _erase(self, message: Erase, effects: Effects) -> None:
        """Erase a customer key's state (on arrival, not in event time: what came before
        is erased, what comes after starts afresh). The key the request named also has its
        merged anonymous ids erased, and its ClickHouse rows deleted at the checkpoint."""
        erased = self.engine.erase(message.key)
        self.kpis.accumulator.forget(message.key)  # its mark names the key; the counts stay
        anonymous = message.key.startswith(ANONYMOUS_PREFIX)
        part = "anonymous" if anonymous else "customer"
        if not message.primary:
            effects.erasures.append(
                ErasurePart(
                    message.request,
                    part,
                    message.key,
                    False,
                    erased.existed,
                    erased.items_dropped,
                    stores=self.stores,
                    partition=self.partition,
                )
            )
            return
        expect = cascade(message.key, message.request, erased.linked, self.topology, effects)
        linked_ids = tuple(key[len(ANONYMOUS_PREFIX) :] for key in erased.linked)
        effects.erasures.append(
            ErasurePart(
                message.request,
                part,
                message.key,
                True,
                erased.existed,
                erased.items_dropped,
                expect,
                customer_id=None if anonymous else message.key,
                anonymous_ids=(message.key[len(ANONYMOUS_PREFIX) :],) if anonymous else linked_ids,
                stores=self.stores,
                partition=self.partition,
            )
        )

    def collect(self, stamp_ms: int, now_s: float, effects: Effects) -> None:
        """At a checkpoint: the facts since the last one (journeys at their latest version),
        as rows and records, counted into the KPI cells."""
        output = self.engine.drain()
        self._send(output.messages, effects)
        topology, observer = self.topology, self.observer
        rows, records = effects.rows, effects.records
        applied = 0
        for fact in output.facts:
            # the fact classes are final: dispatch on the exact type, commonest first
            if type(fact) is AppliedEvent:
                applied += 1
            elif type(fact) is JourneyRecord:
                rows.append((JOURNEYS.name, journey_row(fact, stamp_ms)))
                value = journey_json(fact)
                records.append(OutputRecord(topology.journeys, fact.journey_id.encode(), value))
            elif type(fact) is Irritant:
                rows.append((IRRITANTS.name, irritant_row(fact, stamp_ms)))
                observer.on_irritant(fact.kind)
                value = irritant_json(fact)
                records.append(OutputRecord(topology.irritants, fact.irritant_id.encode(), value))
            elif type(fact) is JourneyClosed:
                observer.on_journey_closed(fact.status)
        if applied:
            observer.on_applied(applied)
        refused = self.kpis.add(output.facts, output.origins)
        if refused:
            observer.on_kpi_too_late(refused)
        cells = self.kpis.collect(self.engine.complete_before(), stamp_ms, now_s, effects)
        self._kpi_changes.update(cells)

    def take_changes(self) -> list[tuple[str, StateChanges]]:
        cells, self._kpi_changes = self._kpi_changes, {}
        states = {key.encode(): value for key, value in self.engine.dirty_states().items()}
        return [(KPI_CELLS, cells), (CUSTOMERS, states)]

    def commit_point(self, next_offset: int) -> int:
        return self.pending.commit_point(self.engine.timeline.pending(), next_offset)

    @property
    def late_items(self) -> int:
        return self.engine.late_items

    def _send(self, messages: list[EngineMessage], effects: Effects) -> None:
        if not messages:
            return
        outbox = Outbox()
        for message in messages:
            outbox.add(self.topology.by_customer, self._partition_of(message.key), message)
        outbox.flush_to(effects)
