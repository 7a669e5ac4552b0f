"""Fleet migration 2: work orders kept centrally, and the places units take in them (see station.fleet.orders).

Three tables, none of them writable by a station's role (SELECT only): the orders as imported (``fleet_orders``),
their closures (``fleet_order_closures``, one row per closed order — an order is never edited), and the places
(``fleet_order_places``: one row per order and serial — a serial counts once in an order, whichever station
builds it). Stations change them only through three ``SECURITY DEFINER`` functions:

* ``fleet_import_order`` — insert an order, or say it is already there (same content) or differs (conflict);
* ``fleet_close_order`` — record the closure;
* ``fleet_take_order_place`` — the decision a unit's start waits for: it locks the order's row (``FOR UPDATE``:
  two stations asking for the same order take turns, each seeing what the other committed), then grants a place
  only while fewer than ``quantity`` serials hold one.

A place is released when its unit is aborted or superseded: the station journals that (``order.place_released``)
and a trigger on ``fleet_journal`` applies it. The same trigger receives the places a station took while it could
not reach the fleet (``[fleet] offline = "allow-and-flag"``): it records them, and if the order is then over-filled,
was closed before, or the serial already counted for another station, it adds a row to ``fleet_flags`` —
``station fleet conflicts`` lists it.
"""

from __future__ import annotations

V2_DESCRIPTION = "work orders: orders, closures, places; import/close/take-place functions"

V2_SQL = r"""
CREATE TABLE fleet_orders (
    order_id text PRIMARY KEY,
    profile text NOT NULL,
    quantity integer NOT NULL CHECK (quantity >= 1),
    due date,
    content text NOT NULL,            -- canonical JSON (station.orders.Order.content)
    content_sha256 text NOT NULL,
    source_file text NOT NULL,
    file_sha256 text NOT NULL,
    imported_by text NOT NULL,
    imported_station text NOT NULL REFERENCES fleet_stations(name),
    imported_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE fleet_order_closures (
    order_id text PRIMARY KEY REFERENCES fleet_orders(order_id),
    closed_by text NOT NULL,
    station text NOT NULL REFERENCES fleet_stations(name),
    reason text NOT NULL,
    closed_at timestamptz NOT NULL DEFAULT now()
);

-- One row per order and serial: the serial's place, held by one unit of one station (released_at NULL) or free.
CREATE TABLE fleet_order_places (
    order_id text NOT NULL REFERENCES fleet_orders(order_id),
    serial text NOT NULL,
    station text NOT NULL REFERENCES fleet_stations(name),
    unit_id bigint NOT NULL,
    taken_at timestamptz NOT NULL DEFAULT now(),
    released_at timestamptz,
    offline boolean NOT NULL DEFAULT false,   -- taken while the station could not reach the fleet
    PRIMARY KEY (order_id, serial)
);
CREATE INDEX fleet_order_places_unit ON fleet_order_places (station, unit_id);

-- The state of the unit holding a place, as the journal tells it: 'running' until the unit arrives; 'aborted' when
-- the unit with that id is another serial's (a station's start that the fleet granted but that rolled back
-- locally: the id went to the station's next unit).
CREATE FUNCTION fleet_order_holder_state(p_station text, p_unit_id bigint, p_serial text) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT coalesce((SELECT CASE WHEN u.serial = p_serial THEN u.state ELSE 'aborted' END FROM fleet_units u
                     WHERE u.station = p_station AND u.unit_id = p_unit_id), 'running')
$$;

-- Places that count: not released, and whose unit the journal has not (yet) shown aborted or superseded.
CREATE FUNCTION fleet_order_held(p_order text) RETURNS TABLE (held integer, passed integer)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT count(*)::integer, (count(*) FILTER (WHERE h.state = 'passed'))::integer
    FROM fleet_order_places p
    CROSS JOIN LATERAL (SELECT fleet_order_holder_state(p.station, p.unit_id, p.serial) AS state) h
    WHERE p.order_id = p_order AND p.released_at IS NULL AND h.state NOT IN ('aborted', 'superseded')
$$;

CREATE FUNCTION fleet_order_station() RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    me text;
BEGIN
    SELECT name INTO me FROM fleet_stations WHERE role_name = session_user;
    IF me IS NULL THEN
        RAISE EXCEPTION 'role % is not registered as a station of this fleet (run station fleet init)', session_user
            USING ERRCODE = '42501';
    END IF;
    RETURN me;
END $$;

CREATE FUNCTION fleet_import_order(p_order text, p_profile text, p_quantity integer, p_due date, p_content text,
                                   p_content_sha256 text, p_source_file text, p_file_sha256 text, p_by text)
RETURNS TABLE (outcome text, recorded_content text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    me text := fleet_order_station();
    found_content text;
    found_sha text;
BEGIN
    INSERT INTO fleet_orders (order_id, profile, quantity, due, content, content_sha256, source_file, file_sha256,
                              imported_by, imported_station)
    VALUES (p_order, p_profile, p_quantity, p_due, p_content, p_content_sha256, p_source_file, p_file_sha256,
            p_by, me)
    ON CONFLICT (order_id) DO NOTHING;
    IF FOUND THEN
        RETURN QUERY SELECT 'imported'::text, p_content;
        RETURN;
    END IF;
    SELECT content, content_sha256 INTO found_content, found_sha FROM fleet_orders WHERE order_id = p_order;
    RETURN QUERY SELECT CASE WHEN found_sha = p_content_sha256 THEN 'unchanged' ELSE 'conflict' END, found_content;
END $$;

CREATE FUNCTION fleet_close_order(p_order text, p_by text, p_reason text)
RETURNS TABLE (outcome text, closed_at timestamptz, closed_by text, reason text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    me text := fleet_order_station();
BEGIN
    PERFORM 1 FROM fleet_orders WHERE order_id = p_order FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'unknown'::text, NULL::timestamptz, NULL::text, NULL::text;
        RETURN;
    END IF;
    INSERT INTO fleet_order_closures (order_id, closed_by, station, reason) VALUES (p_order, p_by, me, p_reason)
    ON CONFLICT (order_id) DO NOTHING;
    RETURN QUERY SELECT CASE WHEN FOUND THEN 'closed' ELSE 'already' END, c.closed_at, c.closed_by, c.reason
                 FROM fleet_order_closures c WHERE c.order_id = p_order;
END $$;

-- The decision a unit's start waits for. Outcomes: granted ('taken', 'kept': this station's unit of the serial
-- already held it), or refused ('unknown', 'closed', 'complete', 'full', 'held': the serial's place is held by a
-- unit of another station).
CREATE FUNCTION fleet_take_order_place(p_order text, p_serial text, p_unit_id bigint, p_reprovision boolean)
RETURNS TABLE (granted boolean, outcome text, quantity integer, held integer, passed integer,
               other_station text, other_unit bigint, other_state text, closed_at timestamptz, closed_by text,
               close_reason text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    me text := fleet_order_station();
    o fleet_orders%ROWTYPE;
    c fleet_order_closures%ROWTYPE;
    p fleet_order_places%ROWTYPE;
    holder_state text;
    n_held integer;
    n_passed integer;
BEGIN
    -- Every place-taking of one order goes through this row lock: one station at a time, each statement below
    -- seeing what the previous holder committed.
    SELECT * INTO o FROM fleet_orders WHERE order_id = p_order FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT false, 'unknown'::text, NULL::integer, 0, 0, NULL::text, NULL::bigint, NULL::text,
                            NULL::timestamptz, NULL::text, NULL::text;
        RETURN;
    END IF;
    SELECT * INTO c FROM fleet_order_closures WHERE order_id = p_order;
    IF FOUND THEN
        RETURN QUERY SELECT false, 'closed'::text, o.quantity, 0, 0, c.station, NULL::bigint, NULL::text,
                            c.closed_at, c.closed_by, c.reason;
        RETURN;
    END IF;
    SELECT h.held, h.passed INTO n_held, n_passed FROM fleet_order_held(p_order) h;
    SELECT * INTO p FROM fleet_order_places WHERE order_id = p_order AND serial = p_serial;
    IF FOUND AND p.released_at IS NULL THEN
        holder_state := fleet_order_holder_state(p.station, p.unit_id, p.serial);
        IF p.station = me THEN
            -- This station's own unit of the serial (resumed, restarted, re-provisioned): its local rules decided.
            UPDATE fleet_order_places SET unit_id = p_unit_id WHERE order_id = p_order AND serial = p_serial;
            RETURN QUERY SELECT true, 'kept'::text, o.quantity, n_held, n_passed, NULL::text, NULL::bigint,
                                NULL::text, NULL::timestamptz, NULL::text, NULL::text;
            RETURN;
        END IF;
        IF NOT (holder_state IN ('aborted', 'superseded') OR (holder_state = 'passed' AND p_reprovision)) THEN
            RETURN QUERY SELECT false, 'held'::text, o.quantity, n_held, n_passed, p.station, p.unit_id,
                                holder_state, NULL::timestamptz, NULL::text, NULL::text;
            RETURN;
        END IF;
        IF holder_state = 'passed' THEN
            n_held := n_held - 1;  -- a passed board re-provisioned here: its place moves, the serial counts once
        END IF;
    END IF;
    IF n_held >= o.quantity THEN
        RETURN QUERY SELECT false, CASE WHEN n_passed >= o.quantity THEN 'complete' ELSE 'full' END, o.quantity,
                            n_held, n_passed, NULL::text, NULL::bigint, NULL::text, NULL::timestamptz, NULL::text,
                            NULL::text;
        RETURN;
    END IF;
    INSERT INTO fleet_order_places AS f (order_id, serial, station, unit_id)
    VALUES (p_order, p_serial, me, p_unit_id)
    ON CONFLICT (order_id, serial) DO UPDATE SET station = EXCLUDED.station, unit_id = EXCLUDED.unit_id,
        taken_at = now(), released_at = NULL, offline = false;
    RETURN QUERY SELECT true, 'taken'::text, o.quantity, n_held + 1, n_passed, NULL::text, NULL::bigint, NULL::text,
                        NULL::timestamptz, NULL::text, NULL::text;
END $$;

-- Places as the stations' journals tell them: releases, and places taken without the fleet (offline).
CREATE FUNCTION fleet_journal_order_places() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp AS $$
DECLARE
    r jsonb := NEW.payload::jsonb -> 'row';
    v_order text := r->>'order_id';
    v_serial text := r->>'serial';
    v_unit bigint := (r->>'unit_id')::bigint;
    quantity_of integer;
    p fleet_order_places%ROWTYPE;
    cl fleet_order_closures%ROWTYPE;
    n_held integer;
BEGIN
    SELECT quantity INTO quantity_of FROM fleet_orders WHERE order_id = v_order FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;  -- an order this station kept to itself (imported before it joined the fleet)
    END IF;
    IF NEW.kind = 'order.place_released' THEN
        UPDATE fleet_order_places SET released_at = now()
        WHERE order_id = v_order AND serial = v_serial AND station = NEW.station AND unit_id = v_unit
          AND released_at IS NULL;
        RETURN NULL;
    END IF;
    SELECT * INTO p FROM fleet_order_places WHERE order_id = v_order AND serial = v_serial;
    IF FOUND AND p.station = NEW.station AND (p.unit_id >= v_unit OR p.released_at IS NULL) THEN
        RETURN NULL;  -- taken through fleet_take_order_place (or a later unit of this station holds it)
    END IF;
    IF r->>'released_at' IS NOT NULL THEN
        RETURN NULL;
    END IF;
    IF FOUND AND p.released_at IS NULL
       AND fleet_order_holder_state(p.station, p.unit_id, p.serial) NOT IN ('aborted', 'superseded') THEN
        INSERT INTO fleet_flags (station, unit_id, serial, reason)
        VALUES (NEW.station, v_unit, v_serial,
                format('work order %s: took a place while the fleet was unreachable, but serial %s already held '
                       'one for station %s (unit %s) — the serial counted twice', v_order, v_serial, p.station,
                       p.unit_id))
        ON CONFLICT DO NOTHING;
        RETURN NULL;
    END IF;
    SELECT * INTO cl FROM fleet_order_closures WHERE order_id = v_order;
    IF FOUND AND cl.closed_at <= (r->>'taken_at')::timestamptz THEN
        INSERT INTO fleet_flags (station, unit_id, serial, reason)
        VALUES (NEW.station, v_unit, v_serial,
                format('work order %s was closed (%s UTC, by %s on station %s: %s) before this unit took a place in '
                       'it while the fleet was unreachable (offline = allow-and-flag)', v_order,
                       to_char(cl.closed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'), cl.closed_by, cl.station,
                       cl.reason))
        ON CONFLICT DO NOTHING;
    END IF;
    INSERT INTO fleet_order_places (order_id, serial, station, unit_id, offline)
    VALUES (v_order, v_serial, NEW.station, v_unit, true)
    ON CONFLICT (order_id, serial) DO UPDATE SET station = EXCLUDED.station, unit_id = EXCLUDED.unit_id,
        taken_at = now(), released_at = NULL, offline = true;
    SELECT h.held INTO n_held FROM fleet_order_held(v_order) h;
    IF n_held > quantity_of THEN
        INSERT INTO fleet_flags (station, unit_id, serial, reason)
        VALUES (NEW.station, v_unit, v_serial,
                format('work order %s over-filled: %s places held for a quantity of %s — this unit took its place '
                       'while the fleet was unreachable (offline = allow-and-flag)', v_order, n_held, quantity_of))
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER fleet_journal_order_places AFTER INSERT ON fleet_journal
    FOR EACH ROW WHEN (NEW.kind IN ('order.place_taken', 'order.place_released'))
    EXECUTE FUNCTION fleet_journal_order_places();

REVOKE ALL ON FUNCTION fleet_order_held(text), fleet_order_holder_state(text, bigint, text), fleet_order_station(),
    fleet_import_order(text, text, integer, date, text, text, text, text, text), fleet_close_order(text, text, text),
    fleet_take_order_place(text, text, bigint, boolean), fleet_journal_order_places() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fleet_import_order(text, text, integer, date, text, text, text, text, text),
    fleet_close_order(text, text, text), fleet_take_order_place(text, text, bigint, boolean) TO @writers@;
GRANT EXECUTE ON FUNCTION fleet_order_held(text), fleet_order_holder_state(text, bigint, text) TO @writers@, @readers@;
GRANT SELECT ON fleet_orders, fleet_order_closures, fleet_order_places TO @writers@, @readers@;
"""
