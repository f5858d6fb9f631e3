// The demo publisher's own script: it renders the meter and the paywall from Pulse's decision.
// The tracker already sets data-pulse-paywall / data-pulse-remaining on <html> (the CSS uses
// them); this adds the text and the log-in buttons.
pulse('onDecision', function (decision) {
  document.documentElement.setAttribute('data-pulse-reason', decision.reason);
  var meter = document.querySelector('.meter');
  if (meter && decision.remaining !== undefined) {
    var n = decision.remaining;
    meter.textContent = n === 1 ? '1 free article left' : n + ' free articles left';
  }
});
// What the publisher's login would hand the page: a token signed with the site's key (here the
// demo's HS256 secret from examples/pulse.toml, public, so this token is too) that vouches for the
// user id and the `subscriber` entitlement until 2036. Only such a token lifts the wall: a
// `{subscriber: true}` trait typed into the console is stored and grants nothing.
var DEMO_SUBSCRIBER_TOKEN =
  'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJkZW1vLXN1YnNjcmliZXIiLCJleHAiOjIwODI3NTg0MDAsImVudGl0bGVtZW50cyI6eyJzdWJzY3JpYmVyIjp0cnVlfX0.l4Wbhz23LljysI8UD7ke3qaS2cz1OJYRboBMvpZAKls';
document.addEventListener('click', function (e) {
  var action = e.target.getAttribute && e.target.getAttribute('data-action');
  if (action === 'login') {
    pulse('identify', 'demo-subscriber', { token: DEMO_SUBSCRIBER_TOKEN });
  } else if (action === 'logout') {
    pulse('reset');
    location.reload();
  }
});
