--! Previous: sha1:a22a805a4ffea711dc49e841ecf762fc60024ef9
--! Hash: sha1:b5232daa8de17557ba96e8dea1830d117dee9f6f
--! Message: Issue 17, every zone that may be the recipient's: when the lead's time zone, its area code's and its state's disagree, a text is allowed only when each allows it (the strictest wins), and the next allowed moment is the first every zone allows; a member's time zone on a lead can no longer move its quiet hours. Members may run smsKeyword again (000068 left its helpers without a grant)

--! Included messaging/sms_words.sql
create or replace function app_hidden.sms_words(text text) returns text
  language sql immutable parallel safe
  set search_path to pg_catalog, public, pg_temp
as $$
  -- 1. NFKC (full-width letters, composed accents), accents folded, apostrophes dropped (don't → dont),
  --    lower case of plain ASCII (so the collation does not matter);
  -- 2. anything but letters becomes a space; courtesy words go; a word said again goes (STOP STOP → stop).
  select pg_catalog.btrim(pg_catalog.regexp_replace(
           pg_catalog.regexp_replace(
             pg_catalog.regexp_replace(
               pg_catalog.regexp_replace(
                 pg_catalog.lower(pg_catalog.translate(pg_catalog.normalize(coalesce(sms_words.text, ''), 'NFKC'),
                   'ÀÁÂÃÄÅàáâãäåÈÉÊËèéêëÌÍÎÏìíîïÒÓÔÕÖòóôõöÙÚÛÜùúûüÑñÇçÝýÿ''’‘`´',
                   'AAAAAAaaaaaaEEEEeeeeIIIIiiiiOOOOOoooooUUUUuuuuNnCcYyy')),
                 '[^a-z]+', ' ', 'g'),
               '\m(please|pls|plz|thanks|thank you|thank u|thx|ty|now|ok|okay|por favor|gracias|merci|svp|sil vous plait|hi|hello|hey|hola|bonjour|just|asap)\M', ' ', 'g'),
             '\s+', ' ', 'g'),
           '\m(\w+)( \1\M)+', '\1', 'g'));
$$;

comment on function app_hidden.sms_words(text) is $$A text reduced to the words that carry its meaning, for app_public.sms_keyword: Unicode NFKC (full-width letters), accents folded (ARRÊT → arret), apostrophes dropped (don't → dont), lower case, every character that is not a letter a space, courtesy words (please, thanks, ok, hi, por favor, merci…) removed, a word repeated in a row said once (STOP STOP → stop), spaces collapsed.$$;
grant execute on function app_hidden.sms_words(text) to :DATABASE_VISITOR;
--! EndIncluded messaging/sms_words.sql
--! Included messaging/sms_opt_out_request.sql
create or replace function app_hidden.sms_opt_out_request() returns text
  language sql immutable parallel safe
  set search_path to pg_catalog, public, pg_temp
as $$
  select '^(' || pg_catalog.array_to_string(array[
    -- stop texting me, can you stop sending these, I want you to stop calling
    '((i )?(want|need|would like|wanna|wish) (you )?to |can you |could you |will you |would you |u )?(stop|quit|cease|end) (texting|txting|messaging|sending|contacting|calling|bothering|spamming|harassing|emailing)( .*)?',
    -- no more texts, stop the messages, end all texts
    '(stop|no more|end|cancel|quit|enough) (all |the |these |your |this |any |all the |all your |with the |with these )?(texts|text messages|text|messages|msgs|sms|marketing|promotions|promos|spam|ads|alerts|notifications)( to me| to this number)?',
    -- unsubscribe me, remove me from your list, take me off the list, delete my number
    '((i )?(want|need|would like|wanna|wish) (you )?to |can you |could you |will you |would you )?(unsubscribe|remove|delete|take) (me|my number|this number)( (off|from|of|out of))?( (the|your|this|my|all|all your|any))?( (list|lists|texts|messages|number|numbers|mailing list|contact list|contacts|database|system))?',
    -- I want to opt out, I would like to unsubscribe, opt me out
    '(i )?((want|need|would like|wanna|wish|d like) to )?(opt out|optout|unsubscribe|be removed|be unsubscribed|stop (receiving|getting) (texts|messages|these|this|them))( (of|from) (this|these|texts|messages|your list))?',
    'opt me out|leave me alone',
    -- dont text me again, never contact me, do not message this number
    '(do not|dont|never|no) (text|message|contact|call|txt|sms|msg) (me|us|this number|my number)( (again|anymore|any more|ever again|ever))?',
    -- Spanish: no me envíes más mensajes, dejen de escribirme, quiero darme de baja, cancelar suscripción
    'no me (envies|envie|envien|mandes|mande|manden|escribas|escriba|escriban|textees)( mas)?( (mensajes|textos|sms))?',
    'dejen? de (enviarme|mandarme|escribirme|textearme)( (mensajes|textos|sms))?',
    '(quiero )?(darme|dame|denme) de baja|cancelar (mi )?(suscripcion|subscripcion)|no quiero (mas )?(mensajes|textos)',
    -- French: arrêtez de menvoyer des messages, ne menvoyez plus de SMS, désabonnez-moi
    '(arretez|arrete|arreter) (de )?(menvoyer|mecrire|me texter)( (des|de))?( (messages|textos|sms|textes))?',
    'ne (menvoyez|menvoie|mecrivez) plus( (de|des))?( (messages|sms|textes))?',
    '(je veux )?me (desabonner|desinscrire)|desabonnez moi|desinscrivez moi'
  ], '|') || ')\Z';
$$;

comment on function app_hidden.sms_opt_out_request() is $$The requests to stop texting that app_public.sms_keyword reads as an opt-out, as one regular expression over the words of a sentence (app_hidden.sms_words): English requests built on stop, quit, cease, end, cancel, unsubscribe, remove, opt out, requests not to text or for no more texts, and their Spanish and French equivalents. Kept apart so that the list reads as data.$$;
grant execute on function app_hidden.sms_opt_out_request() to :DATABASE_VISITOR;
--! EndIncluded messaging/sms_opt_out_request.sql
--! Included messaging/sms_window_open.sql
create or replace function app_hidden.sms_window_open(at timestamptz, zones text[], jurisdictions text[]) returns boolean
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  -- In each zone: the local day's window is the latest start and the earliest end of the rules of every
  -- jurisdiction for that weekday; the moment must be inside it, in every zone.
  select coalesce(pg_catalog.bool_and(coalesce(w.opens < w.closes and l.local::time >= w.opens and l.local::time < w.closes, false)), false)
    from pg_catalog.unnest(sms_window_open.zones) as z(zone)
   cross join lateral (select sms_window_open.at at time zone z.zone as local) l
   cross join lateral (select pg_catalog.max(s.allowed_from) as opens, pg_catalog.min(s.allowed_until) as closes
                         from app_public.sms_send_windows s
                        where s.jurisdiction = any (sms_window_open.jurisdictions)
                          and s.isodow = extract(isodow from l.local)::int) w;
$$;

comment on function app_hidden.sms_window_open(timestamptz, text[], text[]) is $$Whether a text may reach a recipient at this moment under the sending windows of these jurisdictions (app_public.sms_send_windows: every rule must hold) in every one of these time zones (the strictest wins: a recipient whose area code, state and known time zone disagree gets a text only when it is allowed in each). False when no zone is given. Used by app_public.sms_send_window.$$;
grant execute on function app_hidden.sms_window_open(timestamptz, text[], text[]) to :DATABASE_VISITOR;
--! EndIncluded messaging/sms_window_open.sql
--! Included messaging/sms_send_window.sql
create or replace function app_public.sms_send_window(phone text, region text default null, timezone text default null,
    at timestamptz default now()) returns app_public.sms_window
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
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
  select pg_catalog.array_agg(distinct w.jurisdiction order by w.jurisdiction) into v_jurisdictions
    from app_public.sms_send_windows w
   where w.jurisdiction = any (v_regions)
      or w.jurisdiction = any (array_remove(array[v_country, v_area.country, v_given.country], null));
  v_result.timezone := v_tz;
  v_result.jurisdictions := coalesce(v_jurisdictions, '{}');
  select pg_catalog.min(c.max_per_24h) into v_result.max_per_24h
    from app_public.sms_message_caps c where c.jurisdiction = any (v_result.jurisdictions);

  if app_hidden.sms_window_open(sms_send_window.at, v_zones, v_result.jurisdictions) then
    v_result.allowed := true;
    v_result.next_allowed_at := sms_send_window.at;
    v_result.reason := '';
    return v_result;
  end if;
  -- The earliest moment allowed in every zone is the start of some zone's window (the latest start of the
  -- windows that overlap): over the next 8 local days of each zone, the first such start every zone allows.
  select c.moment into v_next
    from (select ((z.local_day + d.i) + w.opens) at time zone z.zone as moment
            from (select u.zone, (sms_send_window.at at time zone u.zone)::date as local_day from pg_catalog.unnest(v_zones) u(zone)) z
           cross join pg_catalog.generate_series(0, 8) d(i)
           cross join lateral (select pg_catalog.max(s.allowed_from) as opens, pg_catalog.min(s.allowed_until) as closes
                                 from app_public.sms_send_windows s
                                where s.jurisdiction = any (v_result.jurisdictions)
                                  and s.isodow = extract(isodow from z.local_day + d.i)::int) w
           where w.opens < w.closes) c
   where c.moment > sms_send_window.at
     and app_hidden.sms_window_open(c.moment, v_zones, v_result.jurisdictions)
   order by c.moment
   limit 1;
  v_result.allowed := false;
  -- Told in the first zone that forbids the moment.
  select z.zone into v_block from pg_catalog.unnest(v_zones) with ordinality z(zone, n)
   where not app_hidden.sms_window_open(sms_send_window.at, array[z.zone], v_result.jurisdictions)
   order by z.n limit 1;
  v_block := coalesce(v_block, v_tz);
  v_result.timezone := v_block;
  if v_next is null then
    v_result.reason := 'No allowed hours in the coming week under ' || pg_catalog.array_to_string(v_result.jurisdictions, ', ')
      || case when pg_catalog.cardinality(v_zones) > 1 then ' in every zone of the recipient (' || pg_catalog.array_to_string(v_zones, ', ') || ')' else '' end;
    return v_result;
  end if;
  v_result.next_allowed_at := v_next;
  v_result.reason := pg_catalog.format('Outside the allowed hours (%s): it is %s there (%s); next allowed %s local time',
    pg_catalog.array_to_string(v_result.jurisdictions, ', '), pg_catalog.to_char(sms_send_window.at at time zone v_block, 'Dy HH24:MI'), v_block,
    pg_catalog.to_char(v_next at time zone v_block, 'Dy HH24:MI'));
  return v_result;
end;
$$;

comment on function app_public.sms_send_window(text, text, text, timestamptz) is $$Whether a marketing or nurture text may reach this recipient at the given moment (default now), and if not, the next moment it may. The rules are the national window (US, or CA for Canadian area codes) plus the stricter rules of the state of the area code of the number and of the known state of the recipient (region), all of which must hold; the local time is that of every zone that may be the recipient’s (the given timezone, the area code’s and the state’s): when they disagree, the moment must be allowed in each (the strictest wins), the next allowed moment is the first allowed in all of them, and timezone names the zone that forbids the moment (else the given one, the area code’s or the state’s). Replies inside a conversation the customer started are not marketing and are not held to these hours. Errors: 22023 for an unknown region (give a postal code, ISO code or name), or when the local time cannot be told (no known area code, timezone or state) or the moment is null.$$;

grant execute on function app_public.sms_send_window(text,text,text,timestamp with time zone) to :DATABASE_VISITOR;
--! EndIncluded messaging/sms_send_window.sql
