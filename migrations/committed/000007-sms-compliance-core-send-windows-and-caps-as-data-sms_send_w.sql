--! Previous: sha1:ceace8c9a420b8b19a7db655eb2f1bd17a419ba6
--! Hash: sha1:34aa329e4fbd2872622e1da491569df9fbd55091
--! Message: SMS compliance core: send windows and caps as data, sms_send_window, sms_keyword

--------------------------------------------------------------------------------
-- SMS compliance core (missed-call issue, part 1): when a text may go out, and what an inbound
-- keyword means. The outbox (messages) will refuse what these functions refuse.
--
--   sms_send_windows        reference data: local hours per weekday, federal (US) and per state
--   sms_message_caps        reference data: messages per 24 hours per recipient, where a state caps it
--   sms_send_window(...)    is a marketing text allowed now for this recipient, and if not, when next
--   sms_keyword(body)       opt_out / opt_in / help / null for an inbound message body
--------------------------------------------------------------------------------

drop function if exists app_public.sms_keyword(text);
drop function if exists app_public.sms_send_window(text, text, text, timestamptz);
drop type if exists app_public.sms_window cascade;
drop table if exists app_public.sms_message_caps, app_public.sms_send_windows cascade;

create table app_public.sms_send_windows (
  jurisdiction text not null,
  isodow int not null,
  allowed_from time not null,
  allowed_until time not null,
  source text not null,
  primary key (jurisdiction, isodow),
  constraint sms_send_windows_jurisdiction_must_be_a_country_or_region_code check (jurisdiction ~ '^[A-Z]{2}(-[A-Z]{2})?$'),
  constraint sms_send_windows_isodow_must_be_1_to_7 check (isodow between 1 and 7),
  constraint sms_send_windows_must_start_before_they_end check (allowed_from < allowed_until)
);
comment on table app_public.sms_send_windows is $$Reference data shared by every tenant (read-only): the local hours in which marketing and nurture texts may reach a recipient, per weekday. Jurisdiction US is the US federal rule (TCPA: 8:00 to 21:00 every day) and CA the Canadian one (CRTC: 9:00 to 21:30 on weekdays, 10:00 to 18:00 at weekends); US-XX rows are stricter state rules (Florida, Maryland, Mississippi, New Jersey and Oklahoma 8:00 to 20:00; Connecticut 9:00 to 20:00; Texas 9:00 to 21:00 Monday to Saturday and 12:00 to 21:00 on Sunday; Rhode Island 9:00 to 18:00 on weekdays and 10:00 to 17:00 at weekends). A text must fall inside every window that applies. State holiday bans are not modelled. Not legal advice: review against current law before relying on it.$$;
comment on column app_public.sms_send_windows.jurisdiction is 'US or CA for the national rule, US-XX for a state (ISO 3166-2).';
comment on column app_public.sms_send_windows.isodow is 'Day of the week in the recipient''s time zone, ISO numbering: 1 Monday to 7 Sunday.';
comment on column app_public.sms_send_windows.allowed_from is 'Local time from which texts are allowed (inclusive).';
comment on column app_public.sms_send_windows.allowed_until is 'Local time until which texts are allowed (exclusive).';
comment on column app_public.sms_send_windows.source is 'The rule this row comes from.';

insert into app_public.sms_send_windows (jurisdiction, isodow, allowed_from, allowed_until, source)
select j.jurisdiction, d, j.f, j.u, j.source
  from (values
    ('US', '08:00'::time, '21:00'::time, 'TCPA, 47 CFR 64.1200(c)(1)'),
    ('US-FL', '08:00', '20:00', 'Florida Telephone Solicitation Act, Fla. Stat. 501.059'),
    ('US-MD', '08:00', '20:00', 'Maryland Stop the Spam Calls Act'),
    ('US-MS', '08:00', '20:00', 'Mississippi Code 77-3-725'),
    ('US-NJ', '08:00', '20:00', 'New Jersey telemarketing rules (N.J.A.C. 13:45D)'),
    ('US-OK', '08:00', '20:00', 'Oklahoma Telephone Solicitation Act'),
    ('US-CT', '09:00', '20:00', 'Connecticut Gen. Stat. 42-288a')) j(jurisdiction, f, u, source)
 cross join pg_catalog.generate_series(1, 7) d;
insert into app_public.sms_send_windows (jurisdiction, isodow, allowed_from, allowed_until, source)
select 'CA', d, case when d >= 6 then '10:00'::time else '09:00'::time end, case when d >= 6 then '18:00'::time else '21:30'::time end,
       'CRTC Unsolicited Telecommunications Rules, Part III'
  from pg_catalog.generate_series(1, 7) d;
insert into app_public.sms_send_windows (jurisdiction, isodow, allowed_from, allowed_until, source)
select 'US-TX', d, case when d = 7 then '12:00'::time else '09:00'::time end, '21:00', 'Texas Business and Commerce Code 301.051'
  from pg_catalog.generate_series(1, 7) d;
insert into app_public.sms_send_windows (jurisdiction, isodow, allowed_from, allowed_until, source)
select 'US-RI', d, case when d >= 6 then '10:00'::time else '09:00'::time end, case when d >= 6 then '17:00'::time else '18:00'::time end,
       'Rhode Island Gen. Laws 5-61-3.4'
  from pg_catalog.generate_series(1, 7) d;

alter table app_public.sms_send_windows enable row level security;
alter table app_public.sms_send_windows force row level security;
create policy owner_all on app_public.sms_send_windows for all to :DATABASE_OWNER using (true) with check (true);
create policy select_all on app_public.sms_send_windows for select to :DATABASE_VISITOR using (true);
grant select on app_public.sms_send_windows to :DATABASE_VISITOR;

create table app_public.sms_message_caps (
  jurisdiction text primary key,
  max_per_24h int not null,
  source text not null,
  constraint sms_message_caps_jurisdiction_must_be_a_country_or_region_code check (jurisdiction ~ '^[A-Z]{2}(-[A-Z]{2})?$'),
  constraint sms_message_caps_max_must_be_positive check (max_per_24h > 0)
);
comment on table app_public.sms_message_caps is $$Reference data shared by every tenant (read-only): where a state caps how many marketing texts one recipient may get from one business in 24 hours (Florida, Maryland, New Jersey, Oklahoma: 3). Not legal advice.$$;
comment on column app_public.sms_message_caps.jurisdiction is 'US-XX (ISO 3166-2).';
comment on column app_public.sms_message_caps.max_per_24h is 'Marketing and nurture texts per recipient per rolling 24 hours.';
comment on column app_public.sms_message_caps.source is 'The rule this row comes from.';
insert into app_public.sms_message_caps (jurisdiction, max_per_24h, source) values
  ('US-FL', 3, 'Fla. Stat. 501.059(8)(b)'),
  ('US-MD', 3, 'Maryland Stop the Spam Calls Act'),
  ('US-NJ', 3, 'N.J.A.C. 13:45D'),
  ('US-OK', 3, 'Oklahoma Telephone Solicitation Act');

alter table app_public.sms_message_caps enable row level security;
alter table app_public.sms_message_caps force row level security;
create policy owner_all on app_public.sms_message_caps for all to :DATABASE_OWNER using (true) with check (true);
create policy select_all on app_public.sms_message_caps for select to :DATABASE_VISITOR using (true);
grant select on app_public.sms_message_caps to :DATABASE_VISITOR;

create type app_public.sms_window as (
  allowed boolean,
  next_allowed_at timestamptz,
  timezone text,
  jurisdictions text[],
  max_per_24h int,
  reason text
);
comment on type app_public.sms_window is 'Whether a marketing text may reach a recipient at a given moment (see sms_send_window).';
comment on column app_public.sms_window.allowed is 'True when the moment is inside every window that applies.';
comment on column app_public.sms_window.next_allowed_at is 'The moment itself when allowed, else the next moment that is (within a week); null when the recipient is unknown to every rule.';
comment on column app_public.sms_window.timezone is 'The recipient''s time zone used.';
comment on column app_public.sms_window.jurisdictions is 'The rules applied, e.g. {US,US-FL}.';
comment on column app_public.sms_window.max_per_24h is 'The strictest per-24-hour cap that applies, if any.';
comment on column app_public.sms_window.reason is 'In words: why not now (empty when allowed).';

create function app_public.sms_send_window(phone text, region text default null, timezone text default null,
    at timestamptz default now()) returns app_public.sms_window
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_area app_public.phone_area_codes := app_public.phone_region(sms_send_window.phone);
  v_regions text[];
  v_country text;
  v_jurisdictions text[];
  v_tz text;
  v_local timestamp;
  v_day date;
  v_from time;
  v_until time;
  v_result app_public.sms_window;
begin
  if sms_send_window.at is null then
    raise exception 'The moment to check is required' using errcode = '22023';
  end if;
  -- A number keeps its area code when its owner moves: the rules of both the state of the area code and
  -- the known state of the recipient apply, and the earlier end and later start win.
  v_regions := array_remove(array[v_area.region, pg_catalog.upper(pg_catalog.btrim(sms_send_window.region))], null);
  v_tz := coalesce(nullif(pg_catalog.btrim(sms_send_window.timezone), ''), v_area.timezone,
    case when pg_catalog.cardinality(v_regions) > 0 then app_public.timezone_for_region(coalesce(v_area.country, 'US'), v_regions[pg_catalog.cardinality(v_regions)]) end);
  if v_tz is null or not exists (select 1 from pg_catalog.pg_timezone_names z where z.name = v_tz) then
    raise exception 'Cannot tell the local time of % (unknown area code, no known time zone or state): give a timezone', coalesce(sms_send_window.phone, 'this recipient')
      using errcode = '22023';
  end if;
  v_country := coalesce(v_area.country, 'US');
  select pg_catalog.array_agg(distinct w.jurisdiction order by w.jurisdiction) into v_jurisdictions
    from app_public.sms_send_windows w
   where w.jurisdiction = v_country or w.jurisdiction = any (select v_country || '-' || r from pg_catalog.unnest(v_regions) r);
  v_result.timezone := v_tz;
  v_result.jurisdictions := coalesce(v_jurisdictions, '{}');
  select pg_catalog.min(c.max_per_24h) into v_result.max_per_24h
    from app_public.sms_message_caps c where c.jurisdiction = any (v_result.jurisdictions);

  v_local := sms_send_window.at at time zone v_tz;
  -- Today and the next 7 local days: the first window (intersection of all rules) not yet over.
  for i in 0..7 loop
    v_day := v_local::date + i;
    select pg_catalog.max(w.allowed_from), pg_catalog.min(w.allowed_until) into v_from, v_until
      from app_public.sms_send_windows w
     where w.jurisdiction = any (v_result.jurisdictions) and w.isodow = extract(isodow from v_day)::int;
    continue when v_from is null or v_from >= v_until;
    if i = 0 and v_local::time >= v_from and v_local::time < v_until then
      v_result.allowed := true;
      v_result.next_allowed_at := sms_send_window.at;
      v_result.reason := '';
      return v_result;
    end if;
    if i > 0 or v_local::time < v_from then
      v_result.allowed := false;
      v_result.next_allowed_at := (v_day + v_from) at time zone v_tz;
      v_result.reason := pg_catalog.format('Outside the allowed hours (%s): it is %s there (%s); next allowed %s local time',
        pg_catalog.array_to_string(v_result.jurisdictions, ', '), pg_catalog.to_char(v_local, 'Dy HH24:MI'), v_tz,
        pg_catalog.to_char(v_day + v_from, 'Dy HH24:MI'));
      return v_result;
    end if;
  end loop;
  v_result.allowed := false;
  v_result.reason := 'No allowed hours in the coming week under ' || pg_catalog.array_to_string(v_result.jurisdictions, ', ');
  return v_result;
end;
$$;
comment on function app_public.sms_send_window(text, text, text, timestamptz) is $$Whether a marketing or nurture text may reach this recipient at the given moment (default now), and if not, the next moment it may. The rules are the national window (US, or CA for Canadian area codes) plus the stricter rules of the state of the area code of the number and of the known state of the recipient (region), all of which must hold; the local time is that of the given timezone, else that of the area code, else that of the state. Replies inside a conversation the customer started are not marketing and are not held to these hours. Errors: 22023 when the local time cannot be told (no known area code, timezone or state) or the moment is null.$$;
grant execute on function app_public.sms_send_window(text, text, text, timestamptz) to :DATABASE_VISITOR;

create function app_public.sms_keyword(body text) returns text
  language sql immutable parallel safe
  set search_path to pg_catalog, public, pg_temp
as $$
  -- Lower case, punctuation and emoji gone, polite words dropped, spaces collapsed; then the whole
  -- remaining message must be one keyword ("Stop please!" is an opt-out, "stop by tomorrow" is not).
  with cleaned as (
    select pg_catalog.btrim(pg_catalog.regexp_replace(
             pg_catalog.regexp_replace(
               pg_catalog.regexp_replace(pg_catalog.lower(coalesce(sms_keyword.body, '')), '[^a-z ]+', ' ', 'g'),
               '\m(please|pls|plz|thanks|thank you|thank u|thx|ty|now|ok|okay)\M', ' ', 'g'),
             '\s+', ' ', 'g')) as words
  )
  select case
    when c.words in ('stop', 'stopall', 'stop all', 'unsubscribe', 'cancel', 'end', 'quit', 'revoke', 'optout', 'opt out') then 'opt_out'
    when c.words in ('start', 'unstop', 'yes') then 'opt_in'
    when c.words in ('help', 'info') then 'help'
  end
  from cleaned c;
$$;
comment on function app_public.sms_keyword(text) is $$What an inbound text means as a carrier keyword: opt_out (STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, REVOKE, OPTOUT), opt_in (START, UNSTOP, YES), help (HELP, INFO), or null for an ordinary message. Case does not matter; punctuation, emoji and polite words (please, thanks, ok…) around the keyword are ignored, but any other word makes it an ordinary message ("stop by at 5" is not an opt-out).$$;
grant execute on function app_public.sms_keyword(text) to :DATABASE_VISITOR;
