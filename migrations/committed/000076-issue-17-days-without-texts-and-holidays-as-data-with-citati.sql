--! Previous: sha1:fe194f1a97b3e60998c31748a2fd3160efacc851
--! Hash: sha1:15066ff53b4ff5b4dce1a358f00d6c399efe8142
--! Message: Issue 17: days without texts and holidays as data with citations: Sundays banned in AL, LA, MS, RI and UT; holiday bans in AL, LA, PA, RI and UT with a holiday calendar computed from rules, federal plus state, stored for 2000 to 2199; WA and MA 8 to 20; NJ 8 to 21 without a cap; every row cites its section; unknown jurisdictions refused; sms_send_window faster

-- Issue 17, point 3: days without texts (Sundays, holidays) and the missing states, as data with citations.
--
--   sms_jurisdictions    every jurisdiction a rule may name (US, CA and their states, provinces, territories)
--   sms_send_windows     a row without hours is a day without texts (Sunday in Rhode Island)
--   sms_holiday_bans     the jurisdictions that allow no marketing texts on their holidays
--   sms_holidays         the holiday calendar, as rules computed per year (federal plus state)

create table if not exists app_public.sms_jurisdictions (
  jurisdiction text primary key,
  name text not null,
  constraint sms_jurisdictions_code_must_be_a_country_or_region_code check (jurisdiction ~ '^[A-Z]{2}(-[A-Z]{2})?$'),
  constraint sms_jurisdictions_name_must_not_be_blank check (pg_catalog.btrim(name) <> '')
);
comment on table app_public.sms_jurisdictions is $$Reference data shared by every tenant (read-only): every jurisdiction a sending rule may name: the United States (US) and Canada (CA), and each state, district, territory and province (US-FL, CA-ON: ISO 3166-2, as in region_timezones). A rule for any other code is refused.$$;
comment on column app_public.sms_jurisdictions.jurisdiction is 'US or CA for the national rule, US-XX or CA-XX for a state, province or territory (ISO 3166-2).';
comment on column app_public.sms_jurisdictions.name is 'Its English name, e.g. Rhode Island.';

insert into app_public.sms_jurisdictions (jurisdiction, name)
select v.jurisdiction, v.name from (values ('US', 'United States'), ('CA', 'Canada')) v(jurisdiction, name)
union all
select r.country || '-' || r.region, r.name from app_public.region_timezones r
on conflict (jurisdiction) do update set name = excluded.name;

alter table app_public.sms_jurisdictions enable row level security;
alter table app_public.sms_jurisdictions force row level security;
drop policy if exists owner_all on app_public.sms_jurisdictions;
create policy owner_all on app_public.sms_jurisdictions for all to :DATABASE_OWNER using (true) with check (true);
drop policy if exists select_all on app_public.sms_jurisdictions;
create policy select_all on app_public.sms_jurisdictions for select to :DATABASE_VISITOR using (true);
grant select on app_public.sms_jurisdictions to :DATABASE_VISITOR;

-- Days without texts: a row without hours.
alter table app_public.sms_send_windows alter column allowed_from drop not null, alter column allowed_until drop not null;
alter table app_public.sms_send_windows drop constraint if exists sms_send_windows_day_without_texts_has_neither_hour;
alter table app_public.sms_send_windows add constraint sms_send_windows_day_without_texts_has_neither_hour
  check ((allowed_from is null) = (allowed_until is null));
alter table app_public.sms_send_windows drop constraint if exists sms_send_windows_jurisdiction_must_be_known;
alter table app_public.sms_send_windows add constraint sms_send_windows_jurisdiction_must_be_known
  foreign key (jurisdiction) references app_public.sms_jurisdictions (jurisdiction);
alter table app_public.sms_message_caps drop constraint if exists sms_message_caps_jurisdiction_must_be_known;
alter table app_public.sms_message_caps add constraint sms_message_caps_jurisdiction_must_be_known
  foreign key (jurisdiction) references app_public.sms_jurisdictions (jurisdiction);
comment on column app_public.sms_send_windows.allowed_from is 'Local time from which texts are allowed (inclusive); null, with allowed_until, on a day without texts.';
comment on column app_public.sms_send_windows.allowed_until is 'Local time until which texts are allowed (exclusive); null, with allowed_from, on a day without texts.';
comment on column app_public.sms_send_windows.source is 'The statute or regulation this row comes from, with its section.';

create table if not exists app_public.sms_holiday_bans (
  jurisdiction text primary key,
  source text not null,
  constraint sms_holiday_bans_jurisdiction_must_be_known foreign key (jurisdiction) references app_public.sms_jurisdictions (jurisdiction),
  constraint sms_holiday_bans_source_must_not_be_blank check (pg_catalog.btrim(source) <> '')
);
comment on table app_public.sms_holiday_bans is $$Reference data shared by every tenant (read-only): the jurisdictions that allow no marketing texts on their legal holidays (Alabama, Louisiana, Pennsylvania, Rhode Island, Utah). Their calendar is their country’s holidays plus their own (app_public.sms_holidays), each on its day and on the day it is observed. Not legal advice.$$;
comment on column app_public.sms_holiday_bans.jurisdiction is 'The jurisdiction whose holidays are without texts, e.g. US-RI.';
comment on column app_public.sms_holiday_bans.source is 'The statute or regulation that bans them, with its section.';

alter table app_public.sms_holiday_bans enable row level security;
alter table app_public.sms_holiday_bans force row level security;
drop policy if exists owner_all on app_public.sms_holiday_bans;
create policy owner_all on app_public.sms_holiday_bans for all to :DATABASE_OWNER using (true) with check (true);
drop policy if exists select_all on app_public.sms_holiday_bans;
create policy select_all on app_public.sms_holiday_bans for select to :DATABASE_VISITOR using (true);
grant select on app_public.sms_holiday_bans to :DATABASE_VISITOR;

create table if not exists app_public.sms_holidays (
  jurisdiction text not null,
  name text not null,
  month int,
  day int,
  isodow int,
  nth int,
  easter_offset int,
  on_date date,
  weekend_rule text not null default 'none',
  source text not null,
  primary key (jurisdiction, name),
  constraint sms_holidays_jurisdiction_must_be_known foreign key (jurisdiction) references app_public.sms_jurisdictions (jurisdiction),
  constraint sms_holidays_name_and_source_must_not_be_blank check (pg_catalog.btrim(name) <> '' and pg_catalog.btrim(source) <> ''),
  constraint sms_holidays_must_name_exactly_one_rule check (
       (month is not null and day is not null and isodow is null and nth is null and easter_offset is null and on_date is null)
    or (month is not null and isodow is not null and nth is not null and easter_offset is null and on_date is null and (day is null or nth > 0))
    or (month is null and day is null and isodow is null and nth is null and easter_offset is not null and on_date is null)
    or (month is null and day is null and isodow is null and nth is null and easter_offset is null and on_date is not null)),
  constraint sms_holidays_month_must_be_1_to_12 check (month between 1 and 12),
  constraint sms_holidays_day_must_exist_in_its_month check (day between 1 and case when month = 2 then 29 when month in (4, 6, 9, 11) then 30 else 31 end),
  constraint sms_holidays_isodow_must_be_1_to_7 check (isodow between 1 and 7),
  constraint sms_holidays_nth_must_be_1_to_5_or_minus_1_for_the_last check (nth between 1 and 5 or nth = -1),
  constraint sms_holidays_easter_offset_must_be_within_9_weeks check (easter_offset between -63 and 63),
  constraint sms_holidays_weekend_rule_must_be_known check (weekend_rule in ('none', 'sunday_to_monday', 'nearest_weekday', 'next_monday'))
);
comment on table app_public.sms_holidays is $$Reference data shared by every tenant (read-only): the holiday calendar of the jurisdictions that ban marketing texts on holidays, as rules computed for any year: the federal holidays (US, 5 U.S.C. 6103) and each state’s own. A rule is one of: a fixed date (month, day), the nth weekday of a month counted from its 1st or from a given day (month, isodow, nth, day: Election Day is the first Tuesday on or after 2 November), the last weekday of a month (nth -1), an offset from Easter Sunday (easter_offset: Mardi Gras -47, Good Friday -2), or one dated day (on_date: a holiday proclaimed for one year). Not legal advice.$$;
comment on column app_public.sms_holidays.jurisdiction is 'US for a federal holiday (in the calendar of every US state that bans holidays), US-XX for a state holiday.';
comment on column app_public.sms_holidays.name is 'The holiday’s name, e.g. Thanksgiving Day.';
comment on column app_public.sms_holidays.month is 'Its month (1 to 12), for a fixed date or an nth weekday.';
comment on column app_public.sms_holidays.day is 'Its day of the month, for a fixed date (29 February only in leap years); for an nth weekday, the day the count starts from (the 1st when null).';
comment on column app_public.sms_holidays.isodow is 'Its weekday (ISO: 1 Monday to 7 Sunday), for an nth weekday of the month.';
comment on column app_public.sms_holidays.nth is 'Which such weekday of the month: 1 to 5, or -1 for the last (a year whose month has no fifth has no holiday).';
comment on column app_public.sms_holidays.easter_offset is 'Days from Easter Sunday (Gregorian), e.g. -47 for Mardi Gras, -2 for Good Friday.';
comment on column app_public.sms_holidays.on_date is 'The one day of a holiday that does not recur (proclaimed for one year).';
comment on column app_public.sms_holidays.weekend_rule is $$When the day falls at a weekend, the weekday it is also observed on: none; sunday_to_monday; nearest_weekday (Saturday to Friday, Sunday to Monday); next_monday (Saturday or Sunday to the Monday after). Both days are without texts.$$;
comment on column app_public.sms_holidays.source is 'The statute that makes it a holiday, with its section.';

alter table app_public.sms_holidays enable row level security;
alter table app_public.sms_holidays force row level security;
drop policy if exists owner_all on app_public.sms_holidays;
create policy owner_all on app_public.sms_holidays for all to :DATABASE_OWNER using (true) with check (true);
drop policy if exists select_all on app_public.sms_holidays;
create policy select_all on app_public.sms_holidays for select to :DATABASE_VISITOR using (true);
grant select on app_public.sms_holidays to :DATABASE_VISITOR;

create table if not exists app_public.sms_holiday_calendar (
  jurisdiction text not null,
  day date not null,
  name text not null,
  source text not null,
  primary key (jurisdiction, day, name),
  constraint sms_holiday_calendar_jurisdiction_must_be_known foreign key (jurisdiction) references app_public.sms_jurisdictions (jurisdiction)
);
comment on table app_public.sms_holiday_calendar is $$Reference data shared by every tenant (read-only, derived): every day without marketing texts because it is a holiday of a jurisdiction that bans them (sms_holiday_bans), years 2000 to 2199, computed from sms_holidays (the country’s holidays plus the jurisdiction’s own, on their day and on the weekday they are observed on). Rebuilt whenever those rules change; read on every check of sending hours.$$;
comment on column app_public.sms_holiday_calendar.jurisdiction is 'The jurisdiction that allows no texts that day, e.g. US-RI.';
comment on column app_public.sms_holiday_calendar.day is 'The local day, in the recipient’s time zone.';
comment on column app_public.sms_holiday_calendar.name is 'The holiday, e.g. Victory Day.';
comment on column app_public.sms_holiday_calendar.source is 'The statute that makes it a holiday.';

alter table app_public.sms_holiday_calendar enable row level security;
alter table app_public.sms_holiday_calendar force row level security;
drop policy if exists owner_all on app_public.sms_holiday_calendar;
create policy owner_all on app_public.sms_holiday_calendar for all to :DATABASE_OWNER using (true) with check (true);
drop policy if exists select_all on app_public.sms_holiday_calendar;
create policy select_all on app_public.sms_holiday_calendar for select to :DATABASE_VISITOR using (true);
grant select on app_public.sms_holiday_calendar to :DATABASE_VISITOR;

drop function if exists app_hidden.sms_day_window(date, text[]);

--! Included messaging/easter_sunday.sql
create or replace function app_hidden.easter_sunday(year int) returns date
  language plpgsql immutable strict parallel safe
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  -- The Gregorian computus (the anonymous algorithm published in Nature, 1876, as given by Meeus).
  a int := easter_sunday.year % 19;
  b int := easter_sunday.year / 100;
  c int := easter_sunday.year % 100;
  d int := b / 4;
  e int := b % 4;
  g int := (8 * b + 13) / 25;
  h int := (19 * a + b - d - g + 15) % 30;
  i int := c / 4;
  k int := c % 4;
  l int := (32 + 2 * e + 2 * i - h - k) % 7;
  m int := (a + 11 * h + 22 * l) / 451;
begin
  return pg_catalog.make_date(easter_sunday.year, (h + l - 7 * m + 114) / 31, (h + l - 7 * m + 114) % 31 + 1);
end;
$$;

comment on function app_hidden.easter_sunday(int) is $$The date of Easter Sunday in the Gregorian calendar for this year (the computus as given by Jean Meeus, Astronomical Algorithms). Holidays that follow Easter (Good Friday, Mardi Gras) are kept as offsets from it in app_public.sms_holidays.$$;
grant execute on function app_hidden.easter_sunday(int) to :DATABASE_VISITOR;
--! EndIncluded messaging/easter_sunday.sql
--! Included messaging/sms_holiday_dates.sql
create or replace function app_hidden.sms_holiday_dates(month int, day int, isodow int, nth int, easter_offset int,
    on_date date, weekend_rule text, year int) returns date[]
  language plpgsql immutable parallel safe
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  -- PL/pgSQL keeps these simple expressions compiled: the calendar is rebuilt from thousands of calls.
  v_first date;
  v_last date;
  v_on date;
begin
  if sms_holiday_dates.on_date is not null then
    v_on := case when extract(year from sms_holiday_dates.on_date) = sms_holiday_dates.year then sms_holiday_dates.on_date end;
  elsif sms_holiday_dates.easter_offset is not null then
    v_on := app_hidden.easter_sunday(sms_holiday_dates.year) + sms_holiday_dates.easter_offset;
  else
    v_first := pg_catalog.make_date(sms_holiday_dates.year, sms_holiday_dates.month, 1);
    v_last := (v_first + interval '1 month' - interval '1 day')::date;
    if sms_holiday_dates.isodow is null then
      -- A fixed date; 29 February only in leap years.
      if sms_holiday_dates.day <= extract(day from v_last) then
        v_on := pg_catalog.make_date(sms_holiday_dates.year, sms_holiday_dates.month, sms_holiday_dates.day);
      end if;
    elsif sms_holiday_dates.nth = -1 then
      -- The last such weekday of the month.
      v_on := v_last - ((extract(isodow from v_last)::int - sms_holiday_dates.isodow + 7) % 7);
    else
      -- The nth such weekday on or after the given day of the month (the 1st unless said), if the month has it.
      v_first := v_first + (coalesce(sms_holiday_dates.day, 1) - 1);
      v_on := v_first + ((sms_holiday_dates.isodow - extract(isodow from v_first)::int + 7) % 7) + (sms_holiday_dates.nth - 1) * 7;
      if v_on > v_last then
        v_on := null;
      end if;
    end if;
  end if;
  -- The day itself, and the weekday it is observed on when it falls at a weekend.
  return case when v_on is null then '{}'::date[]
              when sms_holiday_dates.weekend_rule = 'nearest_weekday' and extract(isodow from v_on) = 6 then array[v_on, v_on - 1]
              when sms_holiday_dates.weekend_rule = 'next_monday' and extract(isodow from v_on) = 6 then array[v_on, v_on + 2]
              when sms_holiday_dates.weekend_rule in ('nearest_weekday', 'sunday_to_monday', 'next_monday') and extract(isodow from v_on) = 7 then array[v_on, v_on + 1]
              else array[v_on] end;
end;
$$;

comment on function app_hidden.sms_holiday_dates(int, int, int, int, int, date, text, int) is $$The dates in this year of one holiday rule of app_public.sms_holidays (a fixed date; the nth weekday of a month, counted from its 1st or from a given day; the last weekday of a month; an offset from Easter; or a single dated holiday): the day itself, and, when it falls at a weekend and its rule moves it, the weekday it is observed on (nearest_weekday: Saturday to Friday and Sunday to Monday; sunday_to_monday; next_monday: Saturday or Sunday to the Monday after). Both are treated as holidays: the strictest reading. Empty when the year has no such day (a fifth Monday, 29 February, a dated holiday of another year).$$;
grant execute on function app_hidden.sms_holiday_dates(int, int, int, int, int, date, text, int) to :DATABASE_VISITOR;
--! EndIncluded messaging/sms_holiday_dates.sql
--! Included messaging/sms_holiday_calendar_covers.sql
create or replace function app_hidden.sms_holiday_calendar_covers(day date) returns boolean
  language sql immutable parallel safe
  -- SQL without SET options, so that it is inlined into its callers.
as $$
  select sms_holiday_calendar_covers.day >= date '2000-01-01' and sms_holiday_calendar_covers.day < date '2200-01-01';
$$;

comment on function app_hidden.sms_holiday_calendar_covers(date) is $$Whether app_public.sms_holiday_calendar holds the holidays of this day (years 2000 to 2199); outside them, holidays are computed from their rules on each call (app_hidden.sms_holiday).$$;
grant execute on function app_hidden.sms_holiday_calendar_covers(date) to :DATABASE_VISITOR;
--! EndIncluded messaging/sms_holiday_calendar_covers.sql
--! Included messaging/tg_sms_holidays__rebuild_calendar.sql
create or replace function app_private.tg_sms_holidays__rebuild_calendar() returns trigger
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  -- Small (a few hundred days a year of the banning jurisdictions): rebuilt whole on any change.
  delete from app_public.sms_holiday_calendar;
  -- Each rule's days computed once (a federal holiday is in the calendar of every banning state).
  insert into app_public.sms_holiday_calendar (jurisdiction, day, name, source)
  with days as (
    select h.jurisdiction, h.name, h.source, d.day
      from app_public.sms_holidays h
     cross join pg_catalog.generate_series(1999, 2200) y(year)
     cross join lateral pg_catalog.unnest(app_hidden.sms_holiday_dates(h.month, h.day, h.isodow, h.nth, h.easter_offset, h.on_date,
                                                                       h.weekend_rule, y.year)) d(day)
     where h.jurisdiction in (select b.jurisdiction from app_public.sms_holiday_bans b
                              union select pg_catalog.split_part(b.jurisdiction, '-', 1) from app_public.sms_holiday_bans b)
       and app_hidden.sms_holiday_calendar_covers(d.day))
  select distinct b.jurisdiction, days.day, days.name, days.source
    from app_public.sms_holiday_bans b
    join days on days.jurisdiction in (b.jurisdiction, pg_catalog.split_part(b.jurisdiction, '-', 1));
  return null;
end;
$$;

comment on function app_private.tg_sms_holidays__rebuild_calendar() is $$Trigger (after each statement on sms_holidays and sms_holiday_bans): rebuilds app_public.sms_holiday_calendar, the days without texts of every jurisdiction that bans its holidays, for the years it covers.$$;
--! EndIncluded messaging/tg_sms_holidays__rebuild_calendar.sql
--! Included messaging/sms_holiday.sql
create or replace function app_hidden.sms_holiday(day date, jurisdictions text[]) returns text
  language sql stable parallel safe
  set search_path to pg_catalog, public, pg_temp
as $$
  -- The calendar of a jurisdiction that bans texts on its holidays is its country’s holidays plus its own:
  -- read from the stored calendar in its years, computed from the rules outside them.
  select case when app_hidden.sms_holiday_calendar_covers(sms_holiday.day) then
    (select c.name from app_public.sms_holiday_calendar c
      where c.jurisdiction = any (sms_holiday.jurisdictions) and c.day = sms_holiday.day
      order by c.jurisdiction, c.name limit 1)
  else
    (select h.name
       from app_public.sms_holiday_bans b
       join app_public.sms_holidays h on h.jurisdiction in (b.jurisdiction, pg_catalog.split_part(b.jurisdiction, '-', 1))
      cross join lateral (values (extract(year from sms_holiday.day)::int), (extract(year from sms_holiday.day)::int + 1)) y(year)
      where b.jurisdiction = any (sms_holiday.jurisdictions)
        and sms_holiday.day = any (app_hidden.sms_holiday_dates(h.month, h.day, h.isodow, h.nth, h.easter_offset, h.on_date, h.weekend_rule, y.year))
      order by b.jurisdiction, h.name
      limit 1)
  end;
$$;

comment on function app_hidden.sms_holiday(date, text[]) is $$The name of a holiday on which one of these jurisdictions allows no marketing texts (app_public.sms_holiday_bans), if this local day is one; else null. A banning jurisdiction’s calendar is its country’s holidays (US: the federal ones) plus its own (app_public.sms_holidays), each on its day and on the weekday it is observed on: app_public.sms_holiday_calendar for the years it covers, the rules themselves outside them.$$;
grant execute on function app_hidden.sms_holiday(date, text[]) to :DATABASE_VISITOR;
--! EndIncluded messaging/sms_holiday.sql
--! Included messaging/sms_day_window.sql
create or replace function app_hidden.sms_day_window(day date, jurisdictions text[]) returns table (opens time, closes time)
  language sql stable parallel safe
  -- SQL without SET options, so that it is inlined into the queries of sms_send_window (one day window
  -- for each zone and each candidate day). Every name is schema-qualified.
as $$
  -- The latest start and the earliest end of the rules of every jurisdiction for that weekday; nothing on a
  -- day one of them bans (a row without hours: a Sunday in Rhode Island) or on one of their holidays.
  select case when w.banned then null else w.opens end, case when w.banned then null else w.closes end
    from (select coalesce(pg_catalog.bool_or(s.allowed_from is null), false)
                 or case when app_hidden.sms_holiday_calendar_covers(sms_day_window.day) then
                      -- LIMIT keeps this a probe of the index for the day, never a read of the whole calendar.
                      (select true from app_public.sms_holiday_calendar c
                        where c.jurisdiction operator(pg_catalog.=) any (sms_day_window.jurisdictions)
                          and c.day operator(pg_catalog.=) sms_day_window.day
                        limit 1) is not null
                    else app_hidden.sms_holiday(sms_day_window.day, sms_day_window.jurisdictions) is not null end as banned,
                 pg_catalog.max(s.allowed_from) as opens, pg_catalog.min(s.allowed_until) as closes
            from app_public.sms_send_windows s
           where s.jurisdiction operator(pg_catalog.=) any (sms_day_window.jurisdictions)
             and s.isodow operator(pg_catalog.=) extract(isodow from sms_day_window.day)::int) w;
$$;

comment on function app_hidden.sms_day_window(date, text[]) is $$The local hours in which marketing texts may go on this local day under every one of these jurisdictions (app_public.sms_send_windows: the latest start and the earliest end), or nulls when none may: a day one of them bans, one of their holidays (app_public.sms_holiday_calendar, app_hidden.sms_holiday), or a weekday no rule names. A window whose start is not before its end allows nothing either. One row.$$;
grant execute on function app_hidden.sms_day_window(date, text[]) to :DATABASE_VISITOR;
--! EndIncluded messaging/sms_day_window.sql
drop function if exists app_hidden.sms_window_open(timestamptz, text[], text[]);
--! Included messaging/sms_send_window.sql
create or replace function app_public.sms_send_window(phone text, region text default null, timezone text default null,
    at timestamptz default now()) returns app_public.sms_window
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
  -- Its queries read small reference tables, the same way whatever the recipient: one generic plan each,
  -- kept for the session, is 2 to 4 times faster than planning them on every call. Those plans are costed
  -- high (arrays of unknown size), so without jit off servers built with LLVM would compile them on every call.
  set plan_cache_mode to force_generic_plan
  set jit to off
as $$
declare
  v_area app_public.phone_area_codes := app_public.phone_region(sms_send_window.phone);
  v_regions text[];
  v_country text;
  v_given app_public.region_timezones;
  v_jurisdictions text[];
  v_tz text;
  v_local timestamp;
  v_result app_public.sms_window;
  v_zones text[];
  v_next timestamptz;
  v_block text;
  v_holiday text;
  v_day_note text := '';
  v_days int;
begin
  if sms_send_window.at is null then
    raise exception 'The moment to check is required' using errcode = '22023';
  end if;
  -- A number keeps its area code when its owner moves: the rules of both the state of the area code and
  -- the known state of the recipient apply, and the earlier end and later start win.
  if nullif(pg_catalog.btrim(sms_send_window.region), '') is not null then
    -- Same spellings as timezone_for_region: postal code, ISO 3166-2 code or English name.
    select r.* into v_given from app_public.region_timezones r
     where pg_catalog.upper(pg_catalog.btrim(sms_send_window.region)) in (r.region, r.country || '-' || r.region)
        or pg_catalog.lower(pg_catalog.btrim(sms_send_window.region)) = pg_catalog.lower(r.name)
     order by r.country = coalesce(v_area.country, 'US') desc
     limit 1;
    if v_given.region is null then
      raise exception 'Unknown region ''%'': give a US state or Canadian province as a postal code (FL), ISO code (US-FL) or name (Florida)', sms_send_window.region
        using errcode = '22023';
    end if;
  end if;
  v_regions := array_remove(array[v_area.country || '-' || v_area.region, v_given.country || '-' || v_given.region], null);
  v_tz := coalesce(nullif(pg_catalog.btrim(sms_send_window.timezone), ''), v_area.timezone, v_given.timezone);
  -- pg_timezone_names reads the whole time zone database (tens of milliseconds on every call, the bulk of
  -- the cost of each marketing or nurture text). The zones of the reference tables are known to be valid
  -- (the migrations checked them); any other name is checked by using it, in a subtransaction.
  if v_tz is null then
    raise exception 'Cannot tell the local time of % (unknown area code, no known time zone or state): give a timezone', coalesce(sms_send_window.phone, 'this recipient')
      using errcode = '22023';
  end if;
  if not exists (select 1 from app_public.phone_area_codes a where a.timezone = v_tz)
     and not exists (select 1 from app_public.region_timezones r where r.timezone = v_tz) then
    begin
      v_local := sms_send_window.at at time zone v_tz;
    exception when invalid_parameter_value then
      raise exception 'Cannot tell the local time of % (unknown area code, no known time zone or state): give a timezone', coalesce(sms_send_window.phone, 'this recipient')
        using errcode = '22023';
    end;
  end if;
  v_local := sms_send_window.at at time zone v_tz;
  -- Every zone that may be the recipient's: the given one (a lead's known zone), the area code's and the
  -- known state's. When they disagree (a Florida number living in California), a text goes only when
  -- every one of them allows it (the strictest wins).
  v_zones := array(select z.zone from pg_catalog.unnest(array[nullif(pg_catalog.btrim(sms_send_window.timezone), ''),
                                                               v_area.timezone, v_given.timezone]) with ordinality as z(zone, n)
                    where z.zone is not null group by z.zone order by pg_catalog.min(z.n));
  -- National rules of every country involved (US when nothing says otherwise), plus the state rules.
  v_country := coalesce(v_area.country, v_given.country, 'US');
  select pg_catalog.array_agg(j.jurisdiction order by j.jurisdiction) into v_jurisdictions
    from (select distinct u.jurisdiction
            from pg_catalog.unnest(v_regions || array_remove(array[v_country, v_area.country, v_given.country], null)) u(jurisdiction)) j
   where exists (select 1 from app_public.sms_send_windows w where w.jurisdiction = j.jurisdiction)
      or exists (select 1 from app_public.sms_holiday_bans b where b.jurisdiction = j.jurisdiction)
      or exists (select 1 from app_public.sms_message_caps c where c.jurisdiction = j.jurisdiction);
  v_result.timezone := v_tz;
  v_result.jurisdictions := coalesce(v_jurisdictions, '{}');
  select pg_catalog.min(c.max_per_24h) into v_result.max_per_24h
    from app_public.sms_message_caps c where c.jurisdiction = any (v_result.jurisdictions);

  -- The allowed spans of each zone's local days, as moments; a moment is allowed when a span of every zone
  -- holds it. The earliest allowed moment is the moment itself or the start of some span (the latest start
  -- of the spans that overlap). Today's spans first, which answer most calls; else the next 8 days.
  foreach v_days in array array[0, 8] loop
    with z as (select u.zone, (sms_send_window.at at time zone u.zone)::date as local_day from pg_catalog.unnest(v_zones) u(zone)),
         spans as (select z.zone, ((z.local_day + d.i) + w.opens) at time zone z.zone as starts,
                          ((z.local_day + d.i) + w.closes) at time zone z.zone as ends
                     from z
                    cross join pg_catalog.generate_series(0, 8) d(i)
                    cross join lateral app_hidden.sms_day_window(z.local_day + d.i, v_result.jurisdictions) w
                    where d.i <= v_days and w.opens < w.closes)
    select c.moment into v_next
      from (select sms_send_window.at as moment union select sp.starts from spans sp where sp.starts > sms_send_window.at) c
     where not exists (select 1 from z
                        where not exists (select 1 from spans sp where sp.zone = z.zone and sp.starts <= c.moment and c.moment < sp.ends))
     order by c.moment
     limit 1;
    exit when v_next is not null;
  end loop;
  if v_next = sms_send_window.at then
    v_result.allowed := true;
    v_result.next_allowed_at := sms_send_window.at;
    v_result.reason := '';
    return v_result;
  end if;
  v_result.allowed := false;
  -- Told in the first zone that forbids the moment.
  select z.zone into v_block
    from pg_catalog.unnest(v_zones) with ordinality z(zone, n)
   cross join lateral (select sms_send_window.at at time zone z.zone as local) l
   cross join lateral app_hidden.sms_day_window(l.local::date, v_result.jurisdictions) w
   where not coalesce(w.opens < w.closes and l.local::time >= w.opens and l.local::time < w.closes, false)
   order by z.n limit 1;
  v_block := coalesce(v_block, v_tz);
  v_result.timezone := v_block;
  -- Say so when the whole local day is without texts: a holiday, or a weekday a rule bans.
  v_holiday := app_hidden.sms_holiday((sms_send_window.at at time zone v_block)::date, v_result.jurisdictions);
  if v_holiday is not null then
    v_day_note := ', ' || v_holiday || ', a holiday without texts';
  elsif exists (select 1 from app_public.sms_send_windows s
                 where s.jurisdiction = any (v_result.jurisdictions) and s.allowed_from is null
                   and s.isodow = extract(isodow from sms_send_window.at at time zone v_block)::int) then
    v_day_note := ', a day without texts';
  end if;
  if v_next is null then
    v_result.reason := 'No allowed hours in the coming week under ' || pg_catalog.array_to_string(v_result.jurisdictions, ', ')
      || case when pg_catalog.cardinality(v_zones) > 1 then ' in every zone of the recipient (' || pg_catalog.array_to_string(v_zones, ', ') || ')' else '' end;
    return v_result;
  end if;
  v_result.next_allowed_at := v_next;
  v_result.reason := pg_catalog.format('Outside the allowed hours (%s): it is %s there (%s)%s; next allowed %s local time',
    pg_catalog.array_to_string(v_result.jurisdictions, ', '), pg_catalog.to_char(sms_send_window.at at time zone v_block, 'Dy HH24:MI'), v_block,
    v_day_note, pg_catalog.to_char(v_next at time zone v_block, 'Dy HH24:MI'));
  return v_result;
end;
$$;

comment on function app_public.sms_send_window(text, text, text, timestamptz) is $$Whether a marketing or nurture text may reach this recipient at the given moment (default now), and if not, the next moment it may. The rules are the national window (US, or CA for Canadian area codes) plus the stricter rules (hours, days without texts such as Sundays, and holidays: app_public.sms_send_windows, sms_holiday_bans, sms_holidays) of the state of the area code of the number and of the known state of the recipient (region), all of which must hold; the local time is that of every zone that may be the recipient’s (the given timezone, the area code’s and the state’s): when they disagree, the moment must be allowed in each (the strictest wins), the next allowed moment is the first allowed in all of them, and timezone names the zone that forbids the moment (else the given one, the area code’s or the state’s). Replies inside a conversation the customer started are not marketing and are not held to these hours. Errors: 22023 for an unknown region (give a postal code, ISO code or name), or when the local time cannot be told (no known area code, timezone or state) or the moment is null.$$;

grant execute on function app_public.sms_send_window(text,text,text,timestamp with time zone) to :DATABASE_VISITOR;
--! EndIncluded messaging/sms_send_window.sql

drop trigger if exists _500_rebuild_calendar on app_public.sms_holidays;
create trigger _500_rebuild_calendar after insert or update or delete or truncate on app_public.sms_holidays
  for each statement execute function app_private.tg_sms_holidays__rebuild_calendar();
drop trigger if exists _500_rebuild_calendar on app_public.sms_holiday_bans;
create trigger _500_rebuild_calendar after insert or update or delete or truncate on app_public.sms_holiday_bans
  for each statement execute function app_private.tg_sms_holidays__rebuild_calendar();

-- The rules, each with its statute (reviewed December 2026 against the statutes and secondary compliance
-- sources; see docs/messaging-and-compliance.md, State rules). Not legal advice.
insert into app_public.sms_send_windows (jurisdiction, isodow, allowed_from, allowed_until, source)
select r.jurisdiction, d.isodow,
       case when d.isodow = 7 and r.sunday = 'none' then null when d.isodow = 7 and r.sunday <> '' then r.sunday::time
            when d.isodow = 6 and r.saturday <> '' then pg_catalog.split_part(r.saturday, '-', 1)::time else r.opens end,
       case when d.isodow = 7 and r.sunday = 'none' then null when d.isodow = 7 and r.sunday <> '' then r.closes
            when d.isodow = 6 and r.saturday <> '' then pg_catalog.split_part(r.saturday, '-', 2)::time else r.closes end,
       r.source
  from (values
    ('US', '08:00'::time, '21:00'::time, '', '', '47 CFR 64.1200(c)(1) (TCPA)'),
    ('US-AL', '08:00', '20:00', '', 'none', 'Ala. Admin. Code r. 770-X-5-.17(1)(b)'),
    ('US-CT', '09:00', '20:00', '', '', 'Conn. Gen. Stat. 42-288a, as amended by P.A. 23-98'),
    ('US-FL', '08:00', '20:00', '', '', 'Fla. Stat. 501.616(6)(a)'),
    ('US-LA', '08:00', '20:00', '', 'none', 'La. R.S. 45:811; LPSC General Order R-29617, V(A)(2)'),
    ('US-MA', '08:00', '20:00', '', '', '201 CMR 12.02(2); M.G.L. c. 159C'),
    ('US-MD', '08:00', '20:00', '', '', 'Md. Code, Com. Law 14-4501 et seq. (Stop the Spam Calls Act of 2023)'),
    ('US-MS', '08:00', '20:00', '', 'none', 'Miss. Code 77-3-723(1)'),
    ('US-NJ', '08:00', '21:00', '', '', 'N.J.S.A. 56:8-128(d); N.J.A.C. 13:45D-4.1'),
    ('US-OK', '08:00', '20:00', '', '', 'Okla. Stat. tit. 15, 775C.4'),
    ('US-RI', '09:00', '18:00', '10:00-17:00', 'none', 'R.I. Gen. Laws 5-61-2(2) and 5-61-3.6'),
    ('US-TX', '09:00', '21:00', '', '12:00', 'Tex. Bus. & Com. Code 301.051'),
    ('US-UT', '08:00', '21:00', '', 'none', 'Utah Code 13-25a-103(3)'),
    ('US-WA', '08:00', '20:00', '', '', 'RCW 80.36.390; RCW 19.158.040(2)')) r(jurisdiction, opens, closes, saturday, sunday, source)
 cross join pg_catalog.generate_series(1, 7) d(isodow)
on conflict (jurisdiction, isodow) do update
  set allowed_from = excluded.allowed_from, allowed_until = excluded.allowed_until, source = excluded.source;

comment on table app_public.sms_send_windows is $$Reference data shared by every tenant (read-only): the local hours in which marketing and nurture texts may reach a recipient, per weekday, with the statute of each row. Jurisdiction US is the federal rule (47 CFR 64.1200(c)(1): 8:00 to 21:00 every day) and CA the Canadian one (CRTC: 9:00 to 21:30 on weekdays, 10:00 to 18:00 at weekends); US-XX rows are state rules. A row without hours is a day without texts (Sundays in Alabama, Louisiana, Mississippi, Rhode Island and Utah). A text must fall inside every window that applies; holidays are in sms_holiday_bans and sms_holidays. docs/messaging-and-compliance.md lists every jurisdiction (State rules). Not legal advice: review against current law before relying on it.$$;

update app_public.sms_message_caps c set source = v.source
  from (values ('US-FL', 'Fla. Stat. 501.616(6)(b)'),
               ('US-MD', 'Md. Code, Com. Law 14-4501 et seq. (Stop the Spam Calls Act of 2023)'),
               ('US-OK', 'Okla. Stat. tit. 15, 775C.4')) v(jurisdiction, source)
 where c.jurisdiction = v.jurisdiction;
-- New Jersey caps nothing per day (N.J.S.A. 56:8-128; N.J.A.C. 13:45D-4.1): its row had no statute behind it.
delete from app_public.sms_message_caps where jurisdiction = 'US-NJ';
comment on table app_public.sms_message_caps is $$Reference data shared by every tenant (read-only): where a state caps how many marketing texts one recipient may get from one business in 24 hours (Florida, Maryland, Oklahoma: 3), with its statute. Not legal advice.$$;
comment on column app_public.sms_message_caps.source is 'The statute this row comes from, with its section.';

insert into app_public.sms_holiday_bans (jurisdiction, source) values
  ('US-AL', 'Ala. Admin. Code r. 770-X-5-.17(1)(b)'),
  ('US-LA', 'La. R.S. 45:811; LPSC General Order R-29617, V(A)(2)'),
  ('US-PA', '73 P.S. 2245(a)(10) (Act 73 of 2019)'),
  ('US-RI', 'R.I. Gen. Laws 5-61-2(2): Monday to Friday except a state or federal holiday'),
  ('US-UT', 'Utah Code 13-25a-103(3)(c)')
on conflict (jurisdiction) do update set source = excluded.source;

insert into app_public.sms_holidays (jurisdiction, name, month, day, isodow, nth, easter_offset, weekend_rule, source) values
  ('US', 'New Year’s Day', 1, 1, null, null, null, 'nearest_weekday', '5 U.S.C. 6103(a), observed per 6103(b)'),
  ('US', 'Birthday of Martin Luther King, Jr.', 1, null, 1, 3, null, 'none', '5 U.S.C. 6103(a)'),
  ('US', 'Washington’s Birthday', 2, null, 1, 3, null, 'none', '5 U.S.C. 6103(a)'),
  ('US', 'Memorial Day', 5, null, 1, -1, null, 'none', '5 U.S.C. 6103(a)'),
  ('US', 'Juneteenth National Independence Day', 6, 19, null, null, null, 'nearest_weekday', '5 U.S.C. 6103(a), observed per 6103(b)'),
  ('US', 'Independence Day', 7, 4, null, null, null, 'nearest_weekday', '5 U.S.C. 6103(a), observed per 6103(b)'),
  ('US', 'Labor Day', 9, null, 1, 1, null, 'none', '5 U.S.C. 6103(a)'),
  ('US', 'Columbus Day', 10, null, 1, 2, null, 'none', '5 U.S.C. 6103(a)'),
  ('US', 'Veterans Day', 11, 11, null, null, null, 'nearest_weekday', '5 U.S.C. 6103(a), observed per 6103(b)'),
  ('US', 'Thanksgiving Day', 11, null, 4, 4, null, 'none', '5 U.S.C. 6103(a)'),
  ('US', 'Christmas Day', 12, 25, null, null, null, 'nearest_weekday', '5 U.S.C. 6103(a), observed per 6103(b)'),
  ('US-AL', 'Mardi Gras', null, null, null, null, -47, 'none', 'Ala. Code 1-3-8 (Baldwin and Mobile counties; kept statewide)'),
  ('US-AL', 'Confederate Memorial Day', 4, null, 1, 4, null, 'none', 'Ala. Code 1-3-8'),
  ('US-AL', 'Jefferson Davis’s Birthday', 6, null, 1, 1, null, 'none', 'Ala. Code 1-3-8'),
  ('US-LA', 'Battle of New Orleans', 1, 8, null, null, null, 'none', 'La. R.S. 1:55'),
  ('US-LA', 'Robert E. Lee Day', 1, 19, null, null, null, 'none', 'La. R.S. 1:55'),
  ('US-LA', 'Mardi Gras', null, null, null, null, -47, 'none', 'La. R.S. 1:55'),
  ('US-LA', 'Good Friday', null, null, null, null, -2, 'none', 'La. R.S. 1:55'),
  ('US-PA', 'Good Friday', null, null, null, null, -2, 'none', '44 P.S. 11'),
  ('US-PA', 'Flag Day', 6, 14, null, null, null, 'none', '44 P.S. 11'),
  ('US-PA', 'Election Day', 11, 2, 2, 1, null, 'none', '44 P.S. 11 (the Tuesday after the first Monday of November)'),
  ('US-RI', 'Rhode Island Independence Day', 5, 4, null, null, null, 'sunday_to_monday', 'R.I. Gen. Laws 25-1-1'),
  ('US-RI', 'Victory Day', 8, null, 1, 2, null, 'none', 'R.I. Gen. Laws 25-1-1'),
  ('US-RI', 'Election Day', 11, 2, 2, 1, null, 'none', 'R.I. Gen. Laws 25-1-1 (in years of a state general election; kept every year)'),
  ('US-RI', 'New Year’s Day (Rhode Island observance)', 1, 1, null, null, null, 'next_monday', 'R.I. Gen. Laws 25-1-1 (a weekend holiday is observed the Monday after)'),
  ('US-RI', 'Independence Day (Rhode Island observance)', 7, 4, null, null, null, 'next_monday', 'R.I. Gen. Laws 25-1-1 (a weekend holiday is observed the Monday after)'),
  ('US-RI', 'Veterans Day (Rhode Island observance)', 11, 11, null, null, null, 'next_monday', 'R.I. Gen. Laws 25-1-1 (a weekend holiday is observed the Monday after)'),
  ('US-RI', 'Christmas Day (Rhode Island observance)', 12, 25, null, null, null, 'next_monday', 'R.I. Gen. Laws 25-1-1 (a weekend holiday is observed the Monday after)'),
  ('US-UT', 'Pioneer Day', 7, 24, null, null, null, 'nearest_weekday', 'Utah Code 63G-1-301'),
  ('US-UT', 'Good Friday', null, null, null, null, -2, 'none', 'Utah Code 63G-1-301 (as amended in 2026)')
on conflict (jurisdiction, name) do update
  set month = excluded.month, day = excluded.day, isodow = excluded.isodow, nth = excluded.nth, easter_offset = excluded.easter_offset,
      on_date = excluded.on_date, weekend_rule = excluded.weekend_rule, source = excluded.source;
